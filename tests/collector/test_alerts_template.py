"""The alert template language: `{name}` fields and `{{ }}` escapes, nothing that runs code."""

from __future__ import annotations

import pytest

from sluice_collector.sinks.alerts.template import Template, TemplateError


def render(text: str, **values: str) -> str:
    return Template.parse(text).render(lambda name: values.get(name))


def test_fields_are_replaced_and_missing_ones_render_as_nothing() -> None:
    assert render("{count} failed logins for {user.id} from {client.address}", count="6",
                  **{"user.id": "alice"}) == "6 failed logins for alice from "


def test_double_braces_are_literal_braces() -> None:
    assert render("{{not a field}} {x}", x="1") == "{not a field} 1"
    assert Template.parse("{{x}}").names == frozenset()


def test_names_are_collected_for_validation() -> None:
    assert Template.parse("{a} {b.c} {a}").names == {"a", "b.c"}
    assert Template.parse("plain").constant


@pytest.mark.parametrize(("text", "reason"), [
    ("{}", "an empty field at character 1"),
    ("{a!r}", "field {a!r} is not a plain name"),
    ("{a:>10}", "field {a:>10} is not a plain name"),
    ("{a[0]}", "field {a[0]} is not a plain name"),
    ("{__class__.__init__}", None),  # a plain (if odd) name: looked up, never evaluated
    ("count {", "an unclosed '{' at character 7"),
    ("a } b", "a lone '}' at character 3"),
    ("{{x}", "a lone '}' at character 4"),
])
def test_anything_but_plain_fields_is_refused(text: str, reason: str | None) -> None:
    if reason is None:
        assert render(text) == ""
        return
    with pytest.raises(TemplateError) as info:
        Template.parse(text)
    assert str(info.value).startswith(reason)


def test_values_are_inserted_verbatim_never_interpreted() -> None:
    """A value that looks like a template or format string stays text (values come from the
    masked stream: a client controls them)."""
    assert render("{a}", a="{b} {0} %s {{") == "{b} {0} %s {{"


def test_an_escape_function_applies_to_values_only() -> None:
    template = Template.parse("http://x/?q={q}&r=1")
    assert template.render({"q": "a b&c"}.get, escape=lambda v: v.replace(" ", "%20")
                           .replace("&", "%26")) == "http://x/?q=a%20b%26c&r=1"
