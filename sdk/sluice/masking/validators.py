"""Checksums that turn "looks like a number" into "is one", so logs full of ids stay readable.

A 16-digit order number or a 19-digit nanosecond timestamp has the shape of a card number; only
the Luhn check (and the issuer prefix) tells them apart. The same goes for IBANs (mod-97) and US
social security numbers (ranges the SSA never issues). Each function takes the matched text and
answers whether masking it is warranted.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "card_ok", "discord_token_ok", "iban_ok", "ip_ok", "luhn_valid", "mod97_valid", "network_ok", "phone_ok",
    "private_key_b64_ok", "ssn_ok",
]

# Issuer prefixes start with 2-6 (Mastercard 2-series, Amex/JCB/Diners 3, Visa 4, Mastercard and
# Maestro 5, Discover/UnionPay 6). Epoch timestamps (1...) and most internal ids do not.
_CARD_FIRST_DIGITS = frozenset("23456")
# A dotted quad as `ipaddress` accepts it: octets 0-255 in ASCII digits, no leading zero.
_OCTET_TEXT = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_TEXT = re.compile(rf"(?:{_OCTET_TEXT}\.){{3}}{_OCTET_TEXT}")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by every card scheme; `digits` holds only 0-9."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_ok(text: str) -> bool:
    """A payment card: 13-19 digits, an issuer prefix, Luhn, and not one repeated digit.

    Written with separators, a card is grouped the way cards are printed: one kind of separator
    and groups of four or more digits (the last may be shorter: `4111 1111 1111 1111`,
    `3714 496353 98431`). Two dates side by side (`2000-01-03 1999-03-01`) are not a card, even
    when their digits happen to pass Luhn.
    """
    if text.isascii():
        return _ascii_card_ok(text)
    separators = {c for c in text if not c.isdigit()}
    if separators:
        if len(separators) > 1:
            return False
        groups = text.split(separators.pop())
        if any(len(group) < 4 for group in groups[:-1]):
            return False
    digits = "".join(c for c in text if c.isdigit())
    if not 13 <= len(digits) <= 19 or digits[0] not in _CARD_FIRST_DIGITS:
        return False
    if len(set(digits)) == 1:
        return False
    return luhn_valid(digits)


# For an ASCII text: its characters other than digits, and each digit's Luhn value when doubled.
_ASCII_DIGITS_GONE = str.maketrans("", "", "0123456789")
_DOUBLED = {str(d): (2 * d - 9 if d > 4 else 2 * d) for d in range(10)}


def _ascii_card_ok(text: str) -> bool:
    """`card_ok` for an ASCII text (every card match is one), with str methods instead of a
    Python loop per character; the same answer (tests hold the two equal)."""
    separators = text.translate(_ASCII_DIGITS_GONE)
    if separators:
        separator = separators[0]
        if separators.count(separator) != len(separators):
            return False
        groups = text.split(separator)
        if any(len(group) < 4 for group in groups[:-1]):
            return False
        digits = text.replace(separator, "")
    else:
        digits = text
    if not 13 <= len(digits) <= 19 or digits[0] not in _CARD_FIRST_DIGITS:
        return False
    if digits.count(digits[0]) == len(digits):
        return False
    # Luhn: from the right, digits in odd places count as they are, the others doubled.
    total = sum(map(int, digits[-1::-2])) + sum(map(_DOUBLED.__getitem__, digits[-2::-2]))
    return total % 10 == 0


def mod97_valid(iban: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to 10-35, mod 97 == 1."""
    compact = iban.replace(" ", "").upper()
    if len(compact) < 15 or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def iban_ok(text: str) -> bool:
    """An IBAN: a country code, two check digits, a body, and a passing mod-97 check."""
    compact = text.replace(" ", "")
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    return 15 <= len(compact) <= 34 and mod97_valid(compact)


def ssn_ok(text: str) -> bool:
    """A US SSN the SSA could have issued: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9":
        return False
    return group != "00" and serial != "0000"


def ip_ok(text: str) -> bool:
    """A real address that can point at a person: loopback and unspecified addresses are kept."""
    # Dotted-quad IPv4, the common case (every `ipv4` hit): the same answer as `ipaddress`
    # without building an address object per hit. Anything else goes to `ipaddress`.
    if _IPV4_TEXT.fullmatch(text):
        return not (text.startswith("127.") or text == "0.0.0.0")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


def network_ok(address: str, prefix: str) -> bool:
    """`address/prefix` is a network (every host bit zero, shorter than a host route), so it
    names no host: `10.0.0.0/8` is; `192.168.1.23/24` (an interface address) is not."""
    if not prefix.isdigit():
        return False
    try:
        network = ipaddress.ip_network(f"{address}/{int(prefix)}", strict=True)
    except ValueError:
        return False
    return network.prefixlen < network.max_prefixlen


def phone_ok(text: str) -> bool:
    """A phone number, not an id, range, date or SSN-shaped number with separators in it.

    With a `+country` code or an `(area)` code any grouping of 9-15 digits is one. Without, only
    the two shapes that numbers are actually written in: North American `NXX NXX XXXX` (area code
    starting 2-9) and national numbers with a trunk `0` (`020 7946 0958`, `0151 234 5678`),
    groups after the first of 3 digits or more, one kind of separator throughout. So
    `000-12-3456`, `100-200-300`, `2024-0001-0002` and `123 456 7890` are not phones.
    """
    digits = sum(c.isdigit() for c in text)
    if not 9 <= digits <= 15:
        return False
    if text.startswith(("+", "(")):
        return True
    separators = {c for c in text if not c.isdigit()}
    if len(separators) != 1:
        return False
    groups = text.split(separators.pop())
    sizes = [len(g) for g in groups]
    if sizes == [3, 3, 4]:
        return groups[0][0] in "23456789"
    first = groups[0]
    return (first[0] == "0" and not first.startswith("000") and len(first) <= 5
            and all(size >= 3 for size in sizes[1:]))


# Base64 of "-----BEGIN": how a PEM block starts once base64-encoded again (a Kubernetes secret,
# an environment variable). Only its first line says whether it holds a private key.
PEM_B64_PREFIX = "LS0tLS1CRUdJTi"


def private_key_b64_ok(text: str) -> bool:
    """Base64 of a PEM block whose BEGIN line names a private key (not a certificate)."""
    import base64
    import binascii

    unwrapped = text[:200].replace("\\r", "").replace("\\n", "")  # JSON-escaped line breaks
    compact = "".join(c for c in unwrapped if c.isalnum() or c in "+/")[:160]
    compact = compact[: len(compact) // 4 * 4]
    try:
        head = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return False
    first_line = head.split(b"\n", 1)[0]
    return b"PRIVATE KEY" in first_line


def discord_token_ok(text: str) -> bool:
    """A Discord bot token: its first part is the bot's numeric user id (a snowflake), base64-encoded."""
    import base64
    import binascii

    first = text.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))
    except (binascii.Error, ValueError):
        return False
    return 17 <= len(decoded) <= 20 and decoded.isdigit()
