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
    # (anchor, lead): every match holds a match of the regex `anchor`, and before it in the
    # match only characters of the class `lead`; the per-string rewrite then searches from
    # the anchor's occurrences (_anchored.py). None: no such pair is known.
    anchor: tuple[str, str] | None = None


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
    chars = f"[^{excluded}()\\[\\]{{}}<>`]"
    # One character, and a run of them (runs keep the regex engine's per-character work low).
    plain = f"(?:{chars}|{escape})" if escape else chars
    run = f"(?:{chars}+|{escape})" if escape else f"{chars}+"
    inner = f"{run}*" if escape else f"{chars}*"
    groups = "|".join(f"[{o}]{inner}[{c}]?" for o, c in (("(", ")"), ("\\[", "\\]"), ("{", "}")))
    stray = f"[)\\]}}>`]+{plain}"
    tail = f"(?:{run}|{groups}|{stray})*"
    if min_units > 1:
        unit = f"(?:{plain}|{groups}|{stray})"
        return f"(?:{plain}{{{min_units}}}|{unit}{{{min_units}}}){tail}"
    head = f"(?:[<]{inner}[>]?|{run}|{groups}|{stray})" if angle else f"(?:{run}|{groups}|{stray})"
    return head + tail


# A mask token (default template) counts as part of a value around or after it, so text glued to
# one (`Bearer [REDACTED:bearer_token]abc123`, `AccountKey=abc[REDACTED:x]def...`) is still a
# value to mask: the token is no hiding place. The engine leaves a value that is nothing but
# tokens alone, so masking stays idempotent.
_MASK_TOKEN = r"\[(?:REDACTED|HASH):[a-z0-9_]+(?::[0-9a-f]+)?\]"  # noqa: S105 (a pattern, not a password)


def _with_tokens(char_class: str, at_least: int, exactly: bool = False) -> str:
    """A value of `char_class` characters and whole mask tokens: `at_least` characters, or a
    token among its first ones (with `exactly`, exactly `at_least` characters, or a token among
    them). Runs of characters keep the regex engine's per-character work low."""
    t = _MASK_TOKEN
    c = char_class
    if exactly:
        return f"(?:{c}{{{at_least}}}|(?:{c}|{t}){{{at_least}}})"
    return f"(?:{c}{{{at_least}}}|{c}{{0,{at_least - 1}}}{t}){c}*(?:{t}{c}*)*"



# --- key/value secrets ------------------------------------------------------------------------
def _by_first_letter(words: list[str], *, cased_first: bool = False) -> str:
    """An alternation of `words` (regex fragments starting with a lower-case letter), grouped by
    that first letter: Python's regex engine tries alternatives one by one at every position, so
    ten groups cost far less than forty words.

    With `cased_first`, each group is spelled twice, first letter lower and upper case, the rest
    case-blind: under ASCII rules the same strings as `(?i:...)` of the plain form, but one whose
    possible first characters Python's engine can work out, so a search skips every position
    that cannot start a word in C instead of trying each group there."""
    groups: dict[str, list[str]] = {}
    for word in words:
        groups.setdefault(word[0], []).append(word[1:])
    rests = {first: rest[0] if len(rest) == 1 else "(?:" + "|".join(rest) + ")"
             for first, rest in groups.items()}
    if cased_first:
        alternatives = [f"{case}(?i:{rest})" for first, rest in rests.items()
                        for case in (first, first.upper())]
    else:
        alternatives = [first + rest for first, rest in rests.items()]
    return "(?:" + "|".join(alternatives) + ")"


_KEYWORDS = [
    "pass(?:word|wd|phrase|code|wort)", "pwd", "private[_-]?key", "kennwort",
    "secret(?:[_-]?key)?", "sess(?:ion)?[_-]?(?:id|key|token)", "signature", "signing[_-]?key",
    "token", "api[_-]?key", "access[_-]?key", "auth[_-]?key", "client[_-]?secret", "credentials?",
    "encryption[_-]?key", "master[_-]?key", "hmac[_-]?key",
]
_KEYWORD = _by_first_letter(_KEYWORDS)
# The key may carry a prefix (`db_password`, `x-api-key`, `user.password`) and a closing quote,
# plain or JSON-escaped; the separator may be URL-encoded (`%3D`, `%3A`). (`\b` first lets the
# regex engine skip most positions at once.)
_KEY_LEAD = r"[\w.-]"
_KEY = r"\b" + _KEY_LEAD + r"*?(?i:" + _KEYWORD + r")"
# Where kv_secret's per-string search starts (_anchored.py): the keyword, and the run of key
# characters before it.
_KEY_ANCHOR = _by_first_letter(_KEYWORDS, cased_first=True)
_SEP = r"(?:\\?[\"']|%22)?\s*(?:=>|[:=]|%3[Dd]|%3[Aa])\s*"
_KV_VALUE = (
    _SEP + r"(?:"
    r"\\?\"(?P<dq>[^\"\\\r\n]{1,512})"  # "password": "x" and \"password\": \"x\"
    r"|'(?P<sq>[^'\\\r\n]{1,512})"  # 'password': 'x'
    # password=x, token: x, ?token=x&..., password%3Dx (stops at %26 and %22, & and quotes, and
    # before a closing bracket it did not open)
    r"|(?:%22)?(?P<bare>" + _value(r"\s\"'&,;\\%", r"%(?:[013-9A-Fa-f][0-9A-Fa-f]|2[013-57-9A-Fa-f])") + r")"
    r")"
)
# <password>x</password>, <ns:ApiKey>x</ns:ApiKey>, or any of the forms of _KV_VALUE.
_KV = _KEY + r"(?:>(?P<xml>[^<\r\n]{1,512})</|" + _KV_VALUE + r")"

# `pass` alone says "password" only where nothing else can be meant: after a word naming what
# the password is for (`db_pass`, `SMTP_PASS`, `rootpass`, keytool's `storepass`), as an
# upper-case environment variable (`APP_PASS`), as a query parameter (`?user=bob&pass=x`, also
# `pw`, `pswd`, `passw`, `pword`) or as the first field of a form body (`pass=x&user=bob`).
# `pass=12` in test output, `bypass=true` and `first_pass=ok` are not keys of a secret. A
# detector of its own, so that its pattern only runs where its pre-scan (`pass=`, `pw=`, ...)
# says it can match.
_OWNERS = _by_first_letter([
    "db", "database", "smtp", "mail", "email", "ftp", "sftp", "mysql", "mariadb", "pg", "postgres",
    "redis", "mongo", "mongodb", "admin", "root", "ldap", "bind", "proxy", "ssh", "vnc", "rdp",
    "wifi", "wpa", "keystore", "truststore", "store", "key", "user", "login", "sa", "jdbc",
    "rabbitmq", "amqp", "sasl", "http", "basic", "api", "app", "master", "service", "svc",
])
_PASS_KEY = (
    r"(?:(?:\b|[_.-])(?i:" + _OWNERS + r")[_.-]?(?i:pass)"
    r"|[A-Z0-9]_PASS"
    r"|[?&](?:[\w.-]*[_.-])?(?i:pass|pw|pswd|passw|pword))"
)

# A PEM block base64-encoded once more (a Kubernetes secret's `data`, an environment variable):
# one line, or wrapped at 64 or 76 columns as `openssl base64` and `base64` write it.
_B64 = "[A-Za-z0-9+/]"
_NL = r"(?:\r?\n|(?:\\r)?\\n)"
_PEM_B64 = (
    "LS0tLS1CRUdJTi(?:"
    f"(?:{_B64}{{50}}(?:{_NL}{_B64}{{64}})*{_NL}|{_B64}{{62}}(?:{_NL}{_B64}{{76}})*{_NL}){_B64}*={{0,2}}"
    f"|{_B64}{{40,}}={{0,2}})"
)

# --- card / IBAN / SSN / network ---------------------------------------------------------------
# Between a key and a number it names: `ssn=`, `ssn: `, `"ssn": "`, `\"ssn\": \"`, `SSN# `, `<ssn>`.
_KEYED_SEP = r"[ \t\"'\\:=#>]{0,8}"
_SSN_KEY = (
    r"(?i:ssn|social[_ .-]?security(?:[_ .-]?(?:number|num|no))?|ss[_ .-]?(?:num|number|no))"
)
_CVV_KEY = (
    r"(?i:cvv2?|cvc2?|cvn|csc|card[_ .-]?(?:verification|security)[_ .-]?(?:code|value|number)"
    r"|security[_ .-]?code)"
)
_CVV_PRESCAN = (
    r"(?i:cvv2?|cvc2?|cvn|csc|verification[_ .-]?(?:code|value|number)|security[_ .-]?(?:code|value|number))"
)
_CARD = r"\b[2-6](?:[ -]?\d){12,18}\b"
_IBAN = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = r"\b(?:" + _OCTET + r"\.){3}" + _OCTET + r"\b"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (
    r"(?:" + _H + r":){7}" + _H
    + r"|(?:" + _H + r"(?::" + _H + r"){0,6})?::(?:" + _H + r"(?::" + _H + r"){0,6})?"
)
# The password of `scheme://user:password@host`. Written raw, it may hold `#`, `/`, `?` and `@`
# (`postgres://u:p#a/s@s@db/x`): then it runs to the first `@` that a host name follows, and
# what comes before its first `/`, `?` or `#` is not all digits, which would be a port
# (`http://host:8080/?u=a@b` is no password).
_USERINFO_TAIL = (
    r"[^\s@/?#]{1,512}"
    r"|[0-9]{0,64}[^\s@/?#0-9][^\s@/?#]{0,512}[@/?#][^\s]{0,512}?"
    r"|[0-9]{1,64}@[^\s]{0,512}?"
)
# Authorization schemes: the credential is the word after one (`SSWS 00ab…`, `AWS4-HMAC-SHA256
# Credential=…`); without a known scheme, the first word is the credential.
_AUTH_SCHEME = (
    r"(?i:bearer|basic|token|digest|negotiate|ntlm|apikey|api-key|ssws|hoba|mutual|vapid|dpop|gnap"
    r"|jwt|oauth|hmac|sharedkey|sharedaccesssignature|splunk|otp|privatetoken|scram-sha-\d+"
    r"|aws4-hmac-sha256|gostack)"
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
    return (_not_in_number(text, start, end) and validators.ip_ok(text[start:end])
            and not _network(text, start, end))


def _ipv6(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or before in ":." or after.isalnum() or after in ":.":
        return False
    return validators.ip_ok(text[start:end]) and not _network(text, start, end)


def _network(text: str, start: int, end: int) -> bool:
    """`10.0.0.0/8`, `fe80::/10`: a network in CIDR notation (no host bits set) names no host."""
    if not text.startswith("/", end):
        return False
    stop = end + 1
    while stop < len(text) and stop - end <= 3 and text[stop].isdigit():
        stop += 1
    return validators.network_ok(text[start:end], text[end + 1:stop])


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
    # A time or a longer dotted number around it (`2026-11-23 10:30`, `1.2.3.4`) is no phone.
    after = text[end:end + 2]
    if after[:1] == ":" or (after[:1] in ".,/" and after[1:].isdigit()):
        return False
    if start and text[start - 1] in ".,:/":
        return False
    return validators.phone_ok(text[start:end])


def _private_key(text: str, start: int, end: int) -> bool:
    if text.startswith(validators.PEM_B64_PREFIX, start):
        return validators.private_key_b64_ok(text[start:end])
    return True


def _mixed_case_after(prefix: int) -> Check:
    """A token body (after its `prefix` characters) mixing upper and lower case, as random ones do."""

    def check(text: str, start: int, end: int) -> bool:
        body = text[start + prefix:end]
        return any(c.isupper() for c in body) and any(c.islower() for c in body)

    return check


def _discord(text: str, start: int, end: int) -> bool:
    return validators.discord_token_ok(text[start:end])


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


def _prefixed(
    name: str, pattern: str, prescan: str, description: str, check: Check | None = None,
) -> Detector:
    """A provider token recognised by its fixed prefix: the whole match is the secret."""
    return Detector(name, pattern, prescan, check=check, description=description)


# Provider tokens with a fixed, documented prefix (so a look-alike needs that exact prefix and
# length): cheap to find, rarely wrong.
_VENDOR_TOKENS: tuple[Detector, ...] = (
    _prefixed("google_oauth",
              r"\bGOCSPX-[A-Za-z0-9_-]{28}|\bya29\.[0-9A-Za-z_-]{30,}|\b1//0[0-9A-Za-z_-]{40,}",
              r"GOCSPX-[A-Za-z0-9_-]{28}|ya29\.[0-9A-Za-z_-]{30}|1//0[0-9A-Za-z_-]{40}",
              "Google OAuth client secrets (GOCSPX-), access tokens (ya29.) and refresh tokens (1//0)"),
    _prefixed("aws_session_token", r"\b(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE)[A-Za-z0-9+/]{80,}={0,2}",
              r"IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE", "AWS STS session tokens"),
    _prefixed("pypi_token", r"\bpypi-AgE[A-Za-z0-9_-]{50,}", r"pypi-AgE", "PyPI API tokens"),
    _prefixed("docker_token", r"\bdckr_(?:pat|oat)_[A-Za-z0-9_-]{24,}", r"dckr_(?:pat|oat)_",
              "Docker Hub personal and organisation access tokens"),
    _prefixed("huggingface_token", r"\bhf_[A-Za-z0-9]{34,40}\b", r"hf_[A-Za-z0-9]{34}",
              "Hugging Face access tokens (mixed case)", _mixed_case_after(3)),
    _prefixed("digitalocean_token", r"\bdo[opr]_v1_[a-f0-9]{64}\b", r"do[opr]_v1_[a-f0-9]{64}",
              "DigitalOcean personal, OAuth and refresh tokens"),
    _prefixed("hashicorp_token",
              r"\bhv[sbr]\.[A-Za-z0-9_-]{24,}|\b[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,}",
              r"hv[sbr]\.[A-Za-z0-9_-]{24}|\.atlasv1\.",
              "HashiCorp Vault (hvs.) and Terraform Cloud (atlasv1) tokens"),
    _prefixed("shopify_token", r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
              r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
              "Shopify access tokens and shared secrets"),
    _prefixed("twilio_key", r"\bSK[0-9a-fA-F]{32}\b", r"SK[0-9a-fA-F]{32}", "Twilio API keys (SK + 32 hex)"),
    _prefixed("mailchimp_key", r"\b[0-9a-f]{32}-us[0-9]{1,2}\b", r"[0-9a-f]-us[0-9]",
              "Mailchimp API keys (32 hex + -usNN)"),
    _prefixed("telegram_token", r"[0-9]{8,10}:AA[A-Za-z0-9_-]{33}\b", r":AA[A-Za-z0-9_-]{33}",
              "Telegram bot tokens"),
    _prefixed("discord_token", r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}\b",
              r"[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.", "Discord bot tokens (the first part "
              "base64-decodes to a numeric user id)", _discord),
    _prefixed("atlassian_token", r"\bATATT3[A-Za-z0-9_=-]{150,}", r"ATATT3", "Atlassian API tokens"),
    _prefixed("databricks_token", r"\bdapi[a-f0-9]{32}(?:-[0-9])?\b", r"dapi[a-f0-9]{32}",
              "Databricks personal access tokens"),
    _prefixed("newrelic_key", r"\bNR(?:AK|JS|II)-[A-Z0-9]{19,32}\b", r"NR(?:AK|JS|II)-[A-Z0-9]{19}",
              "New Relic user, browser and insert keys"),
    _prefixed("grafana_token", r"\bglc_[A-Za-z0-9+/]{32,}={0,2}|\bglsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}\b",
              r"glc_[A-Za-z0-9+/]{32}|glsa_[A-Za-z0-9]{32}_", "Grafana Cloud and service-account tokens"),
    _prefixed("age_key", r"\bAGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}\b", r"AGE-SECRET-KEY-1",
              "age encryption secret keys"),
    _prefixed("square_token", r"\bsq0(?:atp|csp)-[0-9A-Za-z_-]{22,43}", r"sq0(?:atp|csp)-",
              "Square access tokens and OAuth secrets"),
    _prefixed("alibaba_key", r"\bLTAI[A-Za-z0-9]{12,20}\b", r"LTAI[A-Za-z0-9]{12}",
              "Alibaba Cloud AccessKey ids (mixed case)", _mixed_case_after(4)),
    _prefixed("sentry_token", r"\bsntry[su]_[A-Za-z0-9+/=_-]{40,}", r"sntry[su]_",
              "Sentry organisation and user auth tokens"),
    _prefixed("linear_key", r"\blin_(?:api|oauth)_[A-Za-z0-9]{40}\b", r"lin_(?:api|oauth)_",
              "Linear API keys"),
    _prefixed("postman_key", r"\bPMAK-[a-f0-9]{24}-[a-f0-9]{34}\b", r"PMAK-", "Postman API keys"),
    _prefixed("doppler_token", r"\bdp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}\b",
              r"dp\.(?:pt|st|sa|ct|scim|audit)\.", "Doppler tokens"),
    _prefixed("pulumi_token", r"\bpul-[a-f0-9]{40}\b", r"pul-[a-f0-9]{40}", "Pulumi access tokens"),
    _prefixed("supabase_token", r"\bsbp_[a-f0-9]{40}\b|\bsb_secret_[A-Za-z0-9_-]{20,}", r"sbp_|sb_secret_",
              "Supabase access tokens and secret keys"),
)

BUILTIN_DETECTORS: tuple[Detector, ...] = (
    Detector(
        "private_key",
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=:,.\s\\\[\]_]|-[A-Za-z0-9])*"
        r"(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----)?"
        r"|\b" + _PEM_B64
        # PuTTY .ppk files: the base64 lines after `Private-Lines: N`
        + r"|Private-Lines:\s*[0-9]+(?:\s|\\[rn])+(?P<ppk>[A-Za-z0-9+/=]+(?:" + _NL + r"[A-Za-z0-9+/=]+)*)"
        + r"(?:" + _NL + r"|$)",
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY|Private-Lines:|" + validators.PEM_B64_PREFIX,
        secret_groups=("ppk",),
        check=_private_key,
        description="PEM private-key blocks, multi-line or JSON-escaped, with or without END, "
                    "and base64-encoded (LS0tLS1CRUdJTi...) when the decoded BEGIN line names a private key; "
                    "the private lines of PuTTY .ppk files",
    ),
    Detector(
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.",
        description="JSON Web Tokens (three base64url parts, the first a JSON header)",
    ),
    Detector(
        "url_credentials",
        r"\b[A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s:/@?#\[\]]{0,256}:(?P<pw>" + _USERINFO_TAIL + r")"
        r"@(?:[A-Za-z0-9._~%-]+|\[[0-9A-Fa-f:.]+\])(?:[^A-Za-z0-9._~%@-]|$)",
        r"://[^\s:/@?#]*:[^\s]+@",
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
        r"(?P<key>" + _with_tokens("[A-Za-z0-9/+]", 40, exactly=True) + r")(?:[^A-Za-z0-9/+]|$)",
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
    Detector(
        "gitlab_token",
        r"\bgl(?:pat|dt|rt|rtr|ptt|cbt|oas|soat|ffct|imt|agent|ft|wt)-[A-Za-z0-9_-]{20,}"
        r"|\bGR1348941[A-Za-z0-9_-]{20,}",
        r"gl(?:pat|dt|rt|rtr|ptt|cbt|oas|soat|ffct|imt|agent|ft|wt)-[A-Za-z0-9_-]{20}|GR1348941",
        description="GitLab personal, deploy, runner, trigger, OAuth and other glxx- tokens",
    ),
    Detector(
        "slack_token",
        r"\b(?:xox[bpars]|xoxe(?:\.xox[bp])?|xapp)-[A-Za-z0-9-]{10,}",
        r"(?:xox[bpars]|xoxe(?:\.xox[bp])?|xapp)-[A-Za-z0-9-]{10}",
        description="Slack bot, user, app-level, configuration and refresh tokens",
    ),
    Detector(
        "stripe_key",
        r"\b(?:[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,})",
        r"[rs]k_(?:live|test)_[A-Za-z0-9]{16}|whsec_[A-Za-z0-9]{24}",
        description="Stripe secret and restricted keys, webhook signing secrets",
    ),
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
    *_VENDOR_TOKENS,
    Detector(
        "webhook_url",
        r"\bhooks\.slack\.com/(?:services|workflows|triggers)/(?P<slack>[A-Za-z0-9_-]{6,}(?:/[A-Za-z0-9_-]+){1,4})"
        r"|\b(?:discord(?:app)?\.com|discord\.gg)/api/webhooks/(?P<discord>[0-9]{5,20}/[A-Za-z0-9_-]{20,})"
        r"|\.webhook\.office\.com/webhookb2/(?P<teams>[^\s\"'<>]{20,})"
        r"|\bhooks\.zapier\.com/hooks/catch/(?P<zapier>[0-9]+/[A-Za-z0-9]+)",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/|discord(?:app)?\.(?:com|gg)/api/webhooks/"
        r"|\.webhook\.office\.com/webhookb2/|hooks\.zapier\.com/hooks/catch/",
        secret_groups=("slack", "discord", "teams", "zapier"),
        description="Slack, Discord, Microsoft Teams and Zapier incoming-webhook URLs (the path after the "
                    "host)",
    ),
    Detector(
        "cli_password",
        r"(?:\b(?:mysql(?:dump|admin|import|show|check|slap|binlog|pump|sh)?|mariadb(?:-[a-z]+)?)\b"
        r"[^\r\n]{0,256}?\s-p"
        r"|\bmongo(?:sh|dump|restore|import|export|stat|top)?\b[^\r\n]{0,256}?\s(?:-p|--password)[\s=]\s*"
        r"|\bsshpass\s+-p\s*"
        r"|\bredis-cli\b[^\r\n]{0,256}?\s(?:-a|--pass)\s+"
        r"|\bsqlcmd\b[^\r\n]{0,256}?\s-P\s*"
        r"|\bldap(?:search|add|modify|delete|passwd|whoami|compare|modrdn|exop)\b[^\r\n]{0,256}?\s-w\s*"
        r"|\bcurl(?:\s[^\r\n]{0,512}?)?\s(?:-u|--user)[\s=]*[\"']?[^\s:'\"]{1,128}:"
        r"|\bmachine\s+\S+\s+login\s+\S+\s+password\s+)"
        r"(?:'(?P<q1>[^'\r\n]{1,256})'|\"(?P<q2>[^\"\r\n\\]{1,256})\"|(?P<bare>[^\s'\"\\]{1,256}))"
        # SQL: CREATE USER ... IDENTIFIED BY 'pw', ALTER ROLE ... WITH PASSWORD 'pw' (quoted only)
        r"|\b(?i:identified\s+by(?:\s+password)?|password)\s+(?:'(?P<sq1>[^'\r\n]{1,256})'"
        r"|\"(?P<sq2>[^\"\r\n\\]{1,256})\")",
        r"mysql|mariadb|mongo|sshpass|redis-cli|sqlcmd|ldap|curl\s|machine\s+\S+\s+login\s"
        r"|(?i:identified\s+by|password)\s+[\"']",
        secret_groups=("q1", "q2", "bare", "sq1", "sq2"),
        description="passwords on command lines: mysql/mariadb -p<pw>, mongo -p, sshpass -p, redis-cli -a, "
                    "sqlcmd -P, ldapsearch -w, curl -u user:<pw>, .netrc lines; in SQL: IDENTIFIED BY 'pw', "
                    "PASSWORD 'pw'",
    ),
    Detector(
        "azure_key",
        r"(?i:AccountKey|SharedAccessKey|SharedSecret)\s*=\s*"
        r"(?P<key>" + _with_tokens("[A-Za-z0-9+/]", 20) + r"={0,2})"
        r"|\bsig=(?P<sig>" + _with_tokens("[A-Za-z0-9%+/]", 20) + r")"
        r"|\b[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}",
        r"(?i:accountkey|sharedaccesskey|sharedsecret)\s*=|sig=|[0-9]Q~[A-Za-z0-9_~.-]{31}",
        secret_groups=("key", "sig"),
        description="Azure storage AccountKey=, SharedAccessKey= and SAS sig= values in connection "
                    "strings; Entra ID (Azure AD) client secrets (xxx8Q~...)",
    ),
    Detector(
        "auth_header",
        r"(?i:(?:proxy-)?authorization)(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
        r"(?:" + _AUTH_SCHEME + r"\s+)?(?P<cred>" + _AUTH_VALUE + r")"
        # A header line runs to its end (a quoted cookie value, `a="x"`, included); a quoted
        # header value ("Cookie": "a=b", 'Cookie': 'a=b', also in a list) ends at its quote.
        r"|(?i:(?:set-)?cookie)\s*:\s*(?P<cookie>(?:[^\r\n\"\\=]|=(?:\"[^\"\r\n\\]*\"?)?)+)"
        r"|(?i:(?:set-)?cookie)(?:\\?\"\s*:\s*\[?\s*\\?\"(?P<cookiedq>[^\r\n\"\\]+)"
        r"|'\s*:\s*\[?\s*'(?P<cookiesq>[^\r\n'\\]+))",
        r"(?i:authorization|cookie)(?:\\?[\"'])?\s*[:=]",
        secret_groups=("cred", "cookie", "cookiedq", "cookiesq"),
        description="Authorization and Cookie/Set-Cookie header values",
    ),
    Detector(
        "bearer_token",
        r"\b(?i:bearer|basic|token)\s+(?P<cred>" + _with_tokens("[A-Za-z0-9._~+/-]", 8) + r"=*)",
        # Eight value characters, or fewer and then a token.
        r"(?i:bearer|basic|token)\s+(?:[A-Za-z0-9._~+/-]{8}|[A-Za-z0-9._~+/-]{0,7}\[)",
        secret_groups=("cred",),
        check=_bearer,
        description="Bearer/Basic/Token credentials outside a header (values mixing digits or cases)",
    ),
    Detector(
        "kv_secret", _KV, r"(?i:" + _KEYWORD + r")(?:" + _SEP + r"|>)",
        secret_groups=("xml", "dq", "sq", "bare"),
        anchor=(_KEY_ANCHOR, _KEY_LEAD),
        description="values of password=, token:, \"api_key\": \"...\", ?secret=..., <password>... "
                    "(key kept)",
    ),
    Detector(
        "kv_pass",
        _PASS_KEY + _KV_VALUE
        # a form body that starts with it: pass=x&user=bob
        + r"|\b(?i:pass|pw|pswd|passw|pword)(?:=|%3[Dd])(?P<form>[^\s&\"'<>,;]{1,256})&",
        r"(?i:pass|pw|pswd|passw|pword)" + _SEP,
        secret_groups=("dq", "sq", "bare", "form"),
        description="values of short password keys where nothing else is meant: db_pass=, APP_PASS=, "
                    "?pass=, &pw= (key kept)",
    ),
    Detector(
        "card_cvv",
        r"(?:\b|[_.-])" + _CVV_KEY + r"[ \t\"'\\:=#>]{1,8}(?P<cvv>[0-9]{3,4})\b",
        _CVV_PRESCAN + r"[ \t\"'\\:=#>]{1,8}[0-9]{3}",
        secret_groups=("cvv",),
        description="card security codes (3-4 digits) after a key such as cvv, cvc, security_code",
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
        "ssn",
        r"(?:\b|[_.-])" + _SSN_KEY + _KEYED_SEP + r"(?P<keyed>\d{9}|\d{3}[-. ]\d{2}[-. ]\d{4})\b"
        r"|\b\d{3}-\d{2}-\d{4}\b|\b\d{3} \d{2} \d{4}\b",
        _SSN_KEY + _KEYED_SEP + r"\d{3}|\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}",
        secret_groups=("keyed",),
        check=_ssn,
        description="US social security numbers outside the never-issued ranges; compact after a key",
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
