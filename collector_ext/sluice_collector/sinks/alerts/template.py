"""The alert rules' template language: text with `{name}` fields, nothing else.

Labels, annotations and the generator URL of an alert are written as templates such as
``"{count} failed logins for user {user.id} in {window}"``. The language is deliberately tiny:

- ``{name}`` is replaced by the value of `name` (letters, digits, ``_``, ``.``, ``-``, ``/``,
  starting with a letter or ``_``); a name with no value renders as nothing;
- ``{{`` and ``}}`` are literal braces;
- anything else with a brace — ``{}``, ``{a!r}``, ``{a:>10}``, ``{a[0]}``, a lone ``{`` — is
  a config error naming the key.

There are no expressions, filters, attribute access or code: a template is parsed once at
config load into literal and field pieces, and rendering is string concatenation. Values come
from the masked stream (and from the rule itself), so a template cannot unmask anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
SYNTAX_HELP = ("templates are text with {name} fields (name: letters, digits, '_', '.', '-', '/'), "
               "and {{ }} for literal braces; no format specs, conversions or expressions")


class TemplateError(ValueError):
    """A template that does not parse; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: (literal, field name or None) pieces, in order."""

    text: str
    pieces: tuple[tuple[str, str | None], ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for _, name in self.pieces if name is not None)

    @classmethod
    def parse(cls, text: str) -> Template:
        pieces: list[tuple[str, str | None]] = []
        literal: list[str] = []
        position = 0
        for match in _TOKEN_RE.finditer(text):
            literal.append(text[position:match.start()])
            position = match.end()
            piece = match.group(0)
            if piece == "{{":
                literal.append("{")
            elif piece == "}}":
                literal.append("}")
            elif match.group(1) is not None:
                name = match.group(1)
                if not _NAME_RE.match(name):
                    shown = f"{{{name}}}"
                    reason = "an empty field" if not name else f"field {shown} is not a plain name"
                    raise TemplateError(f"{reason} at character {match.start() + 1}")
                pieces.append(("".join(literal), name))
                literal = []
            else:
                what = "an unclosed '{'" if piece == "{" else "a lone '}'"
                raise TemplateError(f"{what} at character {match.start() + 1} (write {piece * 2} "
                                    "for a literal brace)")
        literal.append(text[position:])
        tail = "".join(literal)
        if tail or not pieces:
            pieces.append((tail, None))
        return cls(text, tuple(pieces))

    def render(self, lookup: Callable[[str], str | None],
               escape: Callable[[str], str] | None = None) -> str:
        """The text with every field replaced by `lookup(name)` (None → nothing), each value
        passed through `escape` when given (URL quoting for the generator URL)."""
        out: list[str] = []
        for literal, name in self.pieces:
            out.append(literal)
            if name is not None:
                value = lookup(name)
                if value:
                    out.append(escape(value) if escape is not None else value)
        return "".join(out)

    @property
    def constant(self) -> bool:
        return not self.names


__all__ = ["SYNTAX_HELP", "Template", "TemplateError"]
