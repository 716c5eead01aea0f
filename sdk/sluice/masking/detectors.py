"""The built-in detectors: what a secret or a piece of personal data looks like in a log line.

Every pattern is written in the common subset of Python `re` and RE2 syntax, with ASCII
semantics, so the same text drives both the per-string rewrite (Python `re`, or RE2 for custom
detectors) and the batch pre-scan (one RE2 program over a whole batch). Each detector carries a
`prescan` pattern that must match wherever `pattern` matches (usually a shorter prefix of it):
a string the pre-scan does not flag is never looked at again, so a prescan that is narrower
than its pattern would let secrets through. Checksums and context checks live in
`validators.py` and run only on the few candidates the patterns find.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sluice.masking import validators

__all__ = ["BUILTIN_DETECTORS", "DEFAULT_OFF", "Check", "Detector", "Partial"]

# (whole text, start, end) of the secret span -> mask it?
Check = Callable[[str, int, int], bool]
# (secret, mask token) -> replacement that keeps a non-secret part.
Partial = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class Detector:
    """One named kind of secret.

    `secret_groups` names the groups holding the value to hide (the first one that took part in
    a match wins); with none, the whole match is the secret. Keys, separators and quotes around
    the value are kept so a masked line still reads as the line it was.
    """

    name: str
    pattern: str
    prescan: str
    secret_groups: tuple[str, ...] = ()
    check: Check | None = None
    partial: Partial | None = None
    default_action: str = "mask"
    description: str = ""


# --- values that end where their context does -------------------------------------------------
def _value(excluded: str, escape: str = "", *, angle: bool = True, min_units: int = 1) -> str:
    """An unquoted value: characters outside the class body `excluded` (or an `escape` sequence
    such as `%41`), which keeps the brackets it opens and stops before a closing bracket it did
    not open, so `(password=x)` and `{token: x}` keep their `)` and `}`.

    A value may open `(`, `[` and `{` (closed or not: `a(b)c`, `a(b`) and, with `angle`, start
    with `<` (`password=<x>`). A closing bracket or backtick it did not open is part of it only
    when more value follows (`pa)ss`): at the value's end it belongs to the surrounding text.
    Nothing after a value can fail, so the regex engine never backtracks into one.
    """
    plain = f"[^{excluded}()\\[\\]{{}}<>`]"
    if escape:
        plain = f"(?:{plain}|{escape})"
    groups = "|".join(f"[{o}]{plain}*[{c}]?" for o, c in (("(", ")"), ("\\[", "\\]"), ("{", "}")))
    unit = f"(?:{plain}|{groups}|[)\\]}}>`]+{plain})"
    if angle:
        return f"(?:[<]{plain}*[>]?|{unit}){unit}{{{min_units - 1},}}"
    return f"{unit}{{{min_units},}}"


# A mask token (default template) counts as part of a value around or after it, so text glued to
# one (`Bearer [REDACTED:bearer_token]abc123`, `AccountKey=abc[REDACTED:x]def...`) is still a
# value to mask: the token is no hiding place. The engine leaves a value that is nothing but
# tokens alone, so masking stays idempotent.
_MASK_TOKEN = r"\[(?:REDACTED|HASH):[a-z0-9_]{1,63}(?::[0-9a-f]{12})?\]"  # noqa: S105 (a pattern, not a password)


def _or_token(char_class: str) -> str:
    """One unit of a value: a character of `char_class`, or a whole mask token."""
    return f"(?:{char_class}|{_MASK_TOKEN})"



# --- key/value secrets ------------------------------------------------------------------------
_KEYWORD = (
    r"(?:pass(?:word|wd|phrase)|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key"
    r"|client[_-]?secret|private[_-]?key|auth[_-]?key|credentials?|session[_-]?(?:id|key|token))"
)
# The key may carry a prefix (`db_password`, `x-api-key`, `user.password`) and a closing quote,
# plain or JSON-escaped; the separator may be URL-encoded (`%3D`, `%3A`).
_KEY = r"\b[\w.-]*?(?i:" + _KEYWORD + r")"
_SEP = r"(?:\\?[\"']|%22)?\s*(?:=>|[:=]|%3[Dd]|%3[Aa])\s*"
_KV = (
    _KEY + _SEP + r"(?:"
    r"\\?\"(?P<dq>[^\"\\\r\n]{1,512})"  # "password": "x" and \"password\": \"x\"
    r"|'(?P<sq>[^'\\\r\n]{1,512})"  # 'password': 'x'
    # password=x, token: x, ?token=x&..., password%3Dx (stops at %26 and %22, & and quotes, and
    # before a closing bracket it did not open)
    r"|(?:%22)?(?P<bare>" + _value(r"\s\"'&,;\\%", r"%(?:[013-9A-Fa-f][0-9A-Fa-f]|2[013-57-9A-Fa-f])") + r")"
    r")"
)

# --- card / IBAN / SSN / network ---------------------------------------------------------------
_CARD = r"\b[2-6](?:[ -]?\d){12,18}\b"
_IBAN = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = r"\b(?:" + _OCTET + r"\.){3}" + _OCTET + r"\b"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (
    r"(?:" + _H + r":){7}" + _H
    + r"|(?:" + _H + r"(?::" + _H + r"){0,6})?::(?:" + _H + r"(?::" + _H + r"){0,6})?"
)
# At least four value units (a unit is one character or a bracketed group).
_AUTH_VALUE = _value(r"\s\"',;\\", angle=False, min_units=4)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".ico")


def _not_in_number(text: str, start: int, end: int) -> bool:
    """Reject digits that are part of a decimal or dotted number (0.4111..., 1.2.3.4.5)."""
    if start > 0 and text[start - 1] == ".":
        return False
    return not (end + 1 < len(text) and text[end] == "." and text[end + 1].isdigit())


def _card(text: str, start: int, end: int) -> bool:
    return _not_in_number(text, start, end) and validators.card_ok(text[start:end])


def _iban(text: str, start: int, end: int) -> bool:
    return validators.iban_ok(text[start:end])


def _ssn(text: str, start: int, end: int) -> bool:
    return validators.ssn_ok(text[start:end])


def _ipv4(text: str, start: int, end: int) -> bool:
    # 0.x.y.z is "this network", never a host; such strings are versions or ratios.
    if text.startswith("0.", start):
        return False
    return _not_in_number(text, start, end) and validators.ip_ok(text[start:end])


def _ipv6(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or before in ":." or after.isalnum() or after in ":.":
        return False
    return validators.ip_ok(text[start:end])


def _email(text: str, start: int, end: int) -> bool:
    # `icon@2x.png` is an asset name, not an address.
    return not text[start:end].lower().endswith(_IMAGE_SUFFIXES)


def _bearer(text: str, start: int, end: int) -> bool:
    # "Bearer token" and "Basic Authentication" are prose; credentials mix digits or cases.
    value = text[start:end]
    return any(c.isdigit() for c in value) or any(c.isupper() for c in value[1:])


def _openai(text: str, start: int, end: int) -> bool:
    value = text[start + 3:end]  # after "sk-"
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _phone(text: str, start: int, end: int) -> bool:
    digits = sum(c.isdigit() for c in text[start:end])
    return 9 <= digits <= 15


def _keep_last4(secret: str, token: str) -> str:
    return token + "".join(c for c in secret if c.isalnum())[-4:]


def _keep_domain(secret: str, token: str) -> str:
    at = secret.rfind("@")
    return token + (secret[at:] if at >= 0 else secret[secret.rfind("%40"):])


def _keep_ipv4_network(secret: str, token: str) -> str:
    return secret.rsplit(".", 1)[0] + ".x"


def _keep_ipv6_network(secret: str, token: str) -> str:
    import ipaddress

    hextets = ipaddress.IPv6Address(secret).exploded.split(":")
    return ":".join(h.lstrip("0") or "0" for h in hextets[:3]) + ":x:x:x:x:x"


BUILTIN_DETECTORS: tuple[Detector, ...] = (
    Detector(
        "private_key",
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=:,.\s\\\[\]_]|-[A-Za-z0-9])*"
        r"(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----)?",
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY",
        description="PEM private-key blocks, multi-line or JSON-escaped, with or without END",
    ),
    Detector(
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.",
        description="JSON Web Tokens (three base64url parts, the first a JSON header)",
    ),
    Detector(
        "url_credentials",
        r"\b[A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s:/@?#\[\]]{0,256}:(?P<pw>[^\s@/?#]{1,512})@",
        r"://[^\s:/@?#]*:[^\s@/?#]+@",
        secret_groups=("pw",),
        description="the password of scheme://user:password@host (the user name is kept)",
    ),
    Detector(
        "aws_access_key",
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b",
        r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}",
        description="AWS access key ids",
    ),
    Detector(
        "aws_secret_key",
        r"(?i:aws)[\w.-]{0,20}(?i:secret)[\w.-]{0,20}(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
        r"(?P<key>" + _or_token("[A-Za-z0-9/+]") + r"{40})(?:[^A-Za-z0-9/+]|$)",
        r"(?i:aws)[\w.-]{0,20}(?i:secret)",
        secret_groups=("key",),
        description="AWS secret access keys next to a name that says so",
    ),
    Detector(
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})\b",
        r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22}",
        description="GitHub classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained (github_pat_) tokens",
    ),
    Detector("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}", r"glpat-[A-Za-z0-9_-]{20}",
             description="GitLab personal access tokens"),
    Detector("slack_token", r"\bxox[bpars]-[A-Za-z0-9-]{10,}", r"xox[bpars]-[A-Za-z0-9-]{10}",
             description="Slack bot, user, app and refresh tokens"),
    Detector("stripe_key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}", r"[rs]k_(?:live|test)_[A-Za-z0-9]{16}",
             description="Stripe secret and restricted keys"),
    Detector("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}", r"AIza[0-9A-Za-z_-]{35}",
             description="Google API keys"),
    Detector("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b", r"npm_[A-Za-z0-9]{36}",
             description="npm access tokens"),
    Detector(
        "sendgrid_key", r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", r"SG\.[A-Za-z0-9_-]{22}\.",
        description="SendGrid API keys",
    ),
    Detector(
        "openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}", r"sk-[A-Za-z0-9_-]{32}",
        check=_openai, description="OpenAI-style sk- keys",
    ),
    Detector(
        "azure_key",
        r"(?i:AccountKey|SharedAccessKey|SharedSecret)\s*=\s*"
        r"(?P<key>" + _or_token("[A-Za-z0-9+/]") + r"{20,}={0,2})"
        r"|\bsig=(?P<sig>" + _or_token("[A-Za-z0-9%+/]") + r"{20,})",
        r"(?i:accountkey|sharedaccesskey|sharedsecret)\s*=|sig=",
        secret_groups=("key", "sig"),
        description="Azure storage AccountKey=, SharedAccessKey= and SAS sig= values in connection strings",
    ),
    Detector(
        "auth_header",
        r"(?i:(?:proxy-)?authorization)(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
        r"(?:(?i:bearer|basic|token|digest|negotiate|ntlm|apikey)\s+)?(?P<cred>" + _AUTH_VALUE + r")"
        r"|(?i:(?:set-)?cookie)(?:\\?[\"'])?\s*:\s*(?:\\?[\"'])?(?P<cookie>[^\r\n\"\\]{1,4096})",
        r"(?i:authorization|cookie)(?:\\?[\"'])?\s*[:=]",
        secret_groups=("cred", "cookie"),
        description="Authorization and Cookie/Set-Cookie header values",
    ),
    Detector(
        "bearer_token",
        r"\b(?i:bearer|basic|token)\s+(?P<cred>" + _or_token("[A-Za-z0-9._~+/-]") + r"{8,}=*)",
        # Eight value characters, or fewer and then a token.
        r"(?i:bearer|basic|token)\s+(?:[A-Za-z0-9._~+/-]{8}|[A-Za-z0-9._~+/-]{0,7}\[)",
        secret_groups=("cred",),
        check=_bearer,
        description="Bearer/Basic/Token credentials outside a header (values mixing digits or cases)",
    ),
    Detector(
        "kv_secret", _KV, r"(?i:" + _KEYWORD + r")" + _SEP,
        secret_groups=("dq", "sq", "bare"),
        description="values of password=, token:, \"api_key\": \"...\", ?secret=... (key kept)",
    ),
    Detector(
        "card", _CARD, _CARD, check=_card, partial=_keep_last4,
        description="payment card numbers (13-19 digits, spaces or dashes) passing Luhn",
    ),
    Detector(
        "iban", _IBAN, _IBAN, check=_iban, partial=_keep_last4,
        description="IBANs passing the ISO 13616 mod-97 check",
    ),
    Detector(
        "ssn", r"\b\d{3}-\d{2}-\d{4}\b|\b\d{3} \d{2} \d{4}\b", r"\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}",
        check=_ssn, description="US social security numbers outside the never-issued ranges",
    ),
    Detector(
        "email",
        r"\b[A-Za-z0-9._%+-]{1,64}(?:@|%40)[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b",
        r"[A-Za-z0-9._%+-](?:@|%40)[A-Za-z0-9-]+\.",
        check=_email, partial=_keep_domain, description="e-mail addresses, also URL-encoded (%40)",
    ),
    Detector(
        "ipv4", _IPV4, r"\d\.\d{1,3}\.\d{1,3}\.\d", check=_ipv4, partial=_keep_ipv4_network,
        default_action="partial", description="IPv4 addresses (loopback and 0.0.0.0 kept)",
    ),
    Detector(
        "ipv6", _IPV6, r"::|(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]", check=_ipv6,
        partial=_keep_ipv6_network, default_action="partial",
        description="IPv6 addresses (loopback and :: kept)",
    ),
    Detector(
        "phone",
        r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)|\b\d{2,5})[ .-]\d{2,4}[ .-]\d{2,4}(?:[ .-]\d{2,4})?\b",
        r"[\d)][ .-]\d{2,4}[ .-]\d{2}",
        check=_phone, description="phone numbers (off by default: too close to ids and dates)",
    ),
)

# Detectors that need `detectors.<name>.enabled: true` to run.
DEFAULT_OFF: frozenset[str] = frozenset({"phone"})
