"""Checksums that turn "looks like a number" into "is one", so logs full of ids stay readable.

A 16-digit order number or a 19-digit nanosecond timestamp has the shape of a card number; only
the Luhn check (and the issuer prefix) tells them apart. The same goes for IBANs (mod-97) and US
social security numbers (ranges the SSA never issues). Each function takes the matched text and
answers whether masking it is warranted.
"""

from __future__ import annotations

import ipaddress

__all__ = ["card_ok", "iban_ok", "ip_ok", "luhn_valid", "mod97_valid", "ssn_ok"]

# Issuer prefixes start with 2-6 (Mastercard 2-series, Amex/JCB/Diners 3, Visa 4, Mastercard and
# Maestro 5, Discover/UnionPay 6). Epoch timestamps (1...) and most internal ids do not.
_CARD_FIRST_DIGITS = frozenset("23456")


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
    """A payment card: 13-19 digits, an issuer prefix, Luhn, and not one repeated digit."""
    digits = "".join(c for c in text if c.isdigit())
    if not 13 <= len(digits) <= 19 or digits[0] not in _CARD_FIRST_DIGITS:
        return False
    if len(set(digits)) == 1:
        return False
    return luhn_valid(digits)


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
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)
