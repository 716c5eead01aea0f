"""Detector tables for `sluice.masking`: what each detector must catch and must leave alone.

Fake secrets are assembled at test time (`"gh" + "p_" + ...`) so this file never contains a
string that a secret scanner would flag.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from sluice.masking import (
    BUILTIN_DETECTORS,
    CustomDetector,
    DetectorSetting,
    KeyRule,
    Masker,
    MaskerConfig,
    MaskingConfigError,
)
from sluice.masking.validators import luhn_valid, mod97_valid

ALNUM = "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYz"


def tok(n: int, alphabet: str = ALNUM) -> str:
    """A deterministic fake token of length n."""
    return (alphabet * (n // len(alphabet) + 1))[:n]


def upper(n: int) -> str:
    return tok(n, "Q7W2E9R4T1Y6U3I8O5P0ASDFGHJKLZXCVBNM")


def b64url(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def jwt(payload: dict[str, object], alg: str = "HS256") -> str:
    return f"{b64url({'alg': alg, 'typ': 'JWT'})}.{b64url(payload)}.{tok(43)}"


def pem(kind: str, body_lines: int = 3, end: bool = True, newline: str = "\n") -> str:
    lines = [f"-----BEGIN {kind}-----", *(f"MII{tok(61)}" for _ in range(body_lines))]
    if end:
        lines.append(f"-----END {kind}-----")
    return newline.join(lines)


PRIV = "PRIVATE" + " KEY"
AK = "AK" + "IA"
GHP = "gh" + "p_"
SECRET40 = tok(20) + "/" + tok(10) + "+" + tok(8)
B64_44 = tok(40) + "ab=="


# (text, the secret that must vanish) per detector.
POSITIVES: dict[str, list[tuple[str, str]]] = {
    "private_key": [
        (pem(f"RSA {PRIV}"), f"MII{tok(61)}"),
        (pem(f"EC {PRIV}"), f"MII{tok(61)}"),
        (pem(f"OPENSSH {PRIV}"), f"MII{tok(61)}"),
        (pem(PRIV), f"MII{tok(61)}"),
        (pem(f"ENCRYPTED {PRIV}"), f"MII{tok(61)}"),
        (pem(f"PGP {PRIV} BLOCK"), f"MII{tok(61)}"),
        (pem(f"RSA {PRIV}", newline="\\n"), f"MII{tok(61)}"),
        (pem(f"RSA {PRIV}", end=False), f"MII{tok(61)}"),
        (pem(f"DSA {PRIV}").replace("\nMII", "\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,AB12\n\nMII", 1),
         f"MII{tok(61)}"),
        ("loaded key=" + pem(PRIV, 1) + " from vault", f"MII{tok(61)}"),
    ],
    "jwt": [
        (jwt({"sub": "1234567890"}), jwt({"sub": "1234567890"}).split(".")[1]),
        (jwt({"sub": "alice", "admin": True}), jwt({"sub": "alice", "admin": True}).split(".")[2]),
        ("token issued: " + jwt({"iss": "auth"}), jwt({"iss": "auth"})),
        ("Authorization: Bearer " + jwt({"u": 1}), jwt({"u": 1})),
        ('{"id_token":"' + jwt({"aud": "x"}) + '"}', jwt({"aud": "x"}).split(".")[1]),
        ("cookie jwt=" + jwt({"exp": 1}, "RS256"), jwt({"exp": 1}, "RS256").split(".")[1]),
        (jwt({"scope": "read"}, "none")[:-43], jwt({"scope": "read"}, "none").split(".")[1]),
        ("?t=" + jwt({"k": "v"}) + "&x=1", jwt({"k": "v"}).split(".")[1]),
        ("jwt:" + jwt({"n": "bob"}, "ES256"), jwt({"n": "bob"}, "ES256").split(".")[1]),
        ("[" + jwt({"a": [1, 2]}) + "]", jwt({"a": [1, 2]}).split(".")[1]),
    ],
    "url_credentials": [
        ("postgres://app:" + tok(12) + "@db.internal:5432/orders", tok(12)),
        ("mysql://root:" + tok(9) + "@localhost/db", tok(9)),
        ("redis://:" + tok(16) + "@cache:6379/0", tok(16)),
        ("amqp://guest:" + tok(10) + "@rabbit//", tok(10)),
        ("https://user:" + tok(11) + "@example.com/path", tok(11)),
        ("mongodb+srv://admin:" + tok(14) + "@cluster0.mongodb.net/test", tok(14)),
        ("ftp://anon:" + tok(8) + "@files.example.org", tok(8)),
        ('{"dsn": "postgresql://svc:' + tok(13) + '@pg/app"}', tok(13)),
        ("connecting to smtp://mailer:" + tok(15) + "@smtp.example.com:587", tok(15)),
        ("db=postgres://u:p%40" + tok(7) + "@h/x", "p%40" + tok(7)),
    ],
    "aws_access_key": [
        (prefix + upper(16), prefix + upper(16))
        for prefix in (AK, "AS" + "IA", "AR" + "OA", "AI" + "DA", "AG" + "PA", "AN" + "PA",
                       "AN" + "VA", "AP" + "KA", "AB" + "IA", "AC" + "CA")
    ],
    "aws_secret_key": [
        (f"{name}{sep}{SECRET40}", SECRET40)
        for name, sep in (
            ("aws_secret_access_key", "="), ("AWS_SECRET_ACCESS_KEY", "="), ("aws_secret_key", ": "),
            ('"aws_secret_access_key"', ': "'), ("aws.secret.key", " = "), ("awsSecretKey", "="),
            ("AwsSecretAccessKey", ":"), ("aws-secret", "="), ("export AWS_SECRET_ACCESS_KEY", "="),
            ("\\\"aws_secret_access_key\\\"", ": \\\""),
        )
    ],
    "github_token": [
        (f"pushed with {p}{tok(36)}", f"{p}{tok(36)}")
        for p in (GHP, "gh" + "o_", "gh" + "u_", "gh" + "s_", "gh" + "r_")
    ] + [
        ("github" + "_pat_" + tok(22) + "_" + tok(59), tok(59)),
        ("GITHUB_TOKEN=" + GHP + tok(36), GHP + tok(36)),
        ("https://" + GHP + tok(36) + "@github.com/org/repo", GHP + tok(36)),
        ('{"token":"' + GHP + tok(40) + '"}', GHP + tok(40)),
        ("git clone with gh" + "s_" + upper(36), "gh" + "s_" + upper(36)),
    ],
    "gitlab_token": [
        ("glp" + "at-" + tok(n), "glp" + "at-" + tok(n)) for n in (20, 21, 24, 26, 30, 32, 40, 50, 64, 80)
    ],
    "slack_token": [
        (f"xox{c}-{tok(10, '0123456789')}-{tok(n)}", tok(n))
        for c, n in (("b", 24), ("p", 24), ("a", 30), ("r", 20), ("s", 26),
                     ("b", 32), ("p", 40), ("a", 12), ("r", 16), ("s", 18))
    ],
    "stripe_key": [
        (f"{p}_{env}_{tok(n)}", tok(n))
        for p, env, n in (("s" + "k", "live", 24), ("r" + "k", "live", 24), ("s" + "k", "test", 24),
                          ("r" + "k", "test", 30), ("s" + "k", "live", 99), ("s" + "k", "live", 16),
                          ("r" + "k", "live", 40), ("s" + "k", "test", 50), ("s" + "k", "live", 32),
                          ("r" + "k", "live", 17))
    ],
    "google_api_key": [
        (f"{ctx}AI" + "za" + tok(35), "za" + tok(35))
        for ctx in ("", "key=", "maps ", '"', "?key=", "GOOGLE_API_KEY=", "x ", "(", "k:", "url ")
    ],
    "npm_token": [
        (f"{ctx}np" + "m_" + tok(36), "m_" + tok(36))
        for ctx in ("", "//registry.npmjs.org/:_authToken=", "NPM_TOKEN ", '"', "t=", "x ", "(", "k:",
                    "using ", "[")
    ],
    "sendgrid_key": [
        (f"{ctx}S" + "G." + tok(22) + "." + tok(43), tok(43))
        for ctx in ("", "SENDGRID ", '"', "key ", "(", "k:", "x ", "using ", "[", "<")
    ],
    "openai_key": [
        (f"{ctx}s" + "k-" + mid + tok(n), tok(n))
        for ctx, mid, n in (("", "", 48), ("OPENAI_API_KEY ", "", 48), ("", "proj-", 64), ("", "svcacct-", 40),
                            ('"', "admin-", 40), ("key ", "", 32), ("(", "", 51), ("using ", "proj-", 100),
                            ("x ", "", 56), ("[", "", 33))
    ],
    "azure_key": [
        ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + B64_44 + ";EndpointSuffix=core.windows.net",
         B64_44),
        ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=" + B64_44, B64_44),
        ("accountkey=" + B64_44, B64_44),
        ("AccountKey = " + B64_44, B64_44),
        ("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=" + tok(43) + "%3D", tok(43)),
        ("SharedSecret=" + tok(32), tok(32)),
        ("conn AccountKey=" + tok(88) + "==", tok(88)),
        ("SAS sig=" + tok(30) + "&se=2026", tok(30)),
        ('"AccountKey=' + tok(64) + '"', tok(64)),
        ("SHAREDACCESSKEY=" + tok(20), tok(20)),
    ],
    "auth_header": [
        ("Authorization: Bearer " + tok(30), tok(30)),
        ("authorization: Basic " + base64.b64encode(b"user:" + tok(8).encode()).decode(),
         base64.b64encode(b"user:" + tok(8).encode()).decode()),
        ("Proxy-Authorization: Basic " + tok(20), tok(20)),
        ('{"Authorization": "Token ' + tok(24) + '"}', tok(24)),
        ("AUTHORIZATION=" + tok(16), tok(16)),
        ("Cookie: session=" + tok(32) + "; theme=dark", tok(32)),
        ("Set-Cookie: sid=" + tok(24) + "; Path=/; HttpOnly", tok(24)),
        ("authorization: apikey " + tok(18), tok(18)),
        ('\\"authorization\\": \\"Bearer ' + tok(22) + '\\"', tok(22)),
        ("headers: {'Authorization': 'Digest " + tok(14) + "'}", tok(14)),
    ],
    "bearer_token": [
        ("sent Bearer " + tok(n), tok(n))
        for n in (8, 12, 20, 32, 40)
    ] + [
        ("token " + tok(16), tok(16)),
        ("Basic " + base64.b64encode(b"admin:" + tok(6).encode()).decode(),
         base64.b64encode(b"admin:" + tok(6).encode()).decode()),
        ("BEARER " + upper(20), upper(20)),
        ("using bearer a1b2c3d4e5f6g7", "a1b2c3d4e5f6g7"),
        ("header=Bearer " + tok(24) + "==", tok(24)),
    ],
    "kv_secret": [
        ("login password=" + tok(9) + " ok", tok(9)),
        ('{"password": "' + tok(6) + ' with spaces"}', tok(6) + " with spaces"),
        ("{'api_key': '" + tok(20) + "'}", tok(20)),
        ("GET /cb?code=1&access_token=" + tok(30) + "&state=x", tok(30)),
        ("DB_PASSWORD=" + tok(12), tok(12)),
        ("client_secret: " + tok(18), tok(18)),
        ("x-api-key: " + tok(24), tok(24)),
        ("user.passwd=" + tok(8), tok(8)),
        ("secret_key => " + tok(10), tok(10)),
        ("session_id=" + tok(26) + ";", tok(26)),
        ("private_key: " + tok(40), tok(40)),
        ("credentials=" + tok(14), tok(14)),
    ],
    "card": [
        (f"card {number}", number)
        for number in ("4111111111111111", "4012 8888 8888 1881", "5555-5555-5555-4444",
                       "5105105105105100", "378282246310005", "3714 496353 98431", "6011111111111117",
                       "6011 0009 9013 9424", "3530111333300000", "30569309025904",
                       "6200000000000005", "2223003122003222")
    ],
    "iban": [
        (f"pay to {iban}", iban)
        for iban in ("DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
                     "NL91ABNA0417164300", "ES9121000418450200051332", "IT60X0542811101000000123456",
                     "CH9300762011623852957", "BE68539007547034", "AT611904300234573201",
                     "PL61109010140000071219812874", "DE89 3704 0044 0532 0130 00")
    ],
    "ssn": [
        (f"ssn {ssn}", ssn)
        for ssn in ("123-45-6789", "078-05-1120", "219-09-9999", "457-55-5462", "001-01-0001",
                    "665-12-3456", "899-99-9998", "123 45 6789", "555-12-3456", "772-10-0001")
    ],
    "email": [
        (f"user {addr} signed up", addr)
        for addr in ("bob@example.com", "alice.smith+tag@sub.example.co.uk", "x_y@example.org",
                     "BOB@EXAMPLE.COM", "u123@ex-ample.io", "first.last@mail.company.travel",
                     "a@b.co", "o'neil@example.com".replace("'", ""), "jdoe99@gmail.com", "zoe-m@uni.edu",
                     "bob%40example.com")
    ],
    "ipv4": [
        (f"client {ip} connected", ip)
        for ip in ("192.168.1.23", "10.0.0.5", "8.8.8.8", "203.0.113.77", "172.16.254.1",
                   "198.51.100.7", "1.1.1.1", "100.64.12.34", "255.255.255.254", "54.239.28.85")
    ],
    "ipv6": [
        (f"peer {ip} connected", ip)
        for ip in ("2001:db8:85a3::8a2e:370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                   "fe80::1ff:fe23:4567:890a", "2001:db8::1", "2a00:1450:4001:82b::200e",
                   "2606:4700:4700::1111", "fd12:3456:789a:1::1", "2001:db8:0:0:1:0:0:1",
                   "2001:DB8:ABCD:12::7", "fe80::dead:beef")
    ],
    "phone": [
        (f"call {phone} now", phone)
        for phone in ("+1 415 555 2671", "(415) 555-2671", "+44 20 7946 0958", "415-555-2671",
                      "+49 30 123 4567", "555.123.4567", "+1-202-555-0173", "020 7946 0958",
                      "+61 2 9876 5432".replace("2 9876", "29 876"), "0151 234 5678")
    ],
}

NEGATIVES: dict[str, list[str]] = {
    "private_key": [
        "-----BEGIN CERTIFICATE-----\nMIIB" + tok(40) + "\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMIIB" + tok(40) + "\n-----END PUBLIC KEY-----",
        "-----BEGIN OPENSSH PUBLIC KEY-----", "BEGIN RSA " + PRIV, "private key loaded from /etc/keys/x.pem",
        PRIV + " rotation scheduled", "-----END " + PRIV + "-----", "----------------------------",
        "BEGIN TRANSACTION", "ssh-rsa AAAAB3NzaC1yc2E" + tok(30) + " user@host".replace("user@host", "user"),
    ],
    "jwt": [
        "eyJ", "eyJhbGciOiJIUzI1NiJ9", "a.b.c", "file.tar.gz", "eyJabcd.efgh", "version 1.2.3",
        "com.example.app.Main", "eyJa.eyJb.c", "EYJHBGCI.EYJZDWI.sig", "xeyJhbGciOi.eyJzdWIiOi.abcd",
    ],
    "url_credentials": [
        "https://example.com/path", "http://host:8080/path", "ssh user@host", "mailto:bob@example.com",
        "http://host/path?x=a:b@c", "git@github.com:org/repo.git", "redis://localhost:6379/0",
        "file:///etc/hosts", "http://[::1]:8080/", "ws://host:9000/socket",
    ],
    "aws_access_key": [
        AK + upper(15), "akia" + upper(16).lower(), AK + upper(17), "XKIA" + upper(16), AK + tok(16).lower(),
        "4bf92f3577b34da6a3ce929d0e0e4736", "X" + AK + upper(16), AK + "_" + upper(16), "AKIA", "ASIA-Pacific",
    ],
    "aws_secret_key": [
        "sha=" + tok(40), "aws_secret_access_key=short", "aws_region=eu-west-1", "aws_secret=" + tok(39),
        "aws_secret=" + tok(41), "secret=" + SECRET40.replace("/", "x"), "aws_access_key_id=" + AK + upper(16),
        "aws secret rotated", "AWS_SECRET_ACCESS_KEY=", "awsregion=" + tok(40),
    ],
    "github_token": [
        GHP + tok(35), "ghx_" + tok(36), "ghp-" + tok(36), "github" + "_pat_short", "x" + GHP + tok(36),
        GHP + tok(36) + "_", "ghp", "github.com/org/repo", "GHP_" + tok(36), "gh_" + tok(36),
    ],
    "gitlab_token": [
        "glp" + "at-" + tok(19), "glpat_" + tok(20), "xglp" + "at-" + tok(20), "glpat", "GLPAT-" + tok(20),
        "gitlab.com/group/project", "glp-" + tok(20), "glpat-", "glpat-short", "gl" + "pat" + tok(20),
    ],
    "slack_token": [
        "xoxc-" + tok(20), "xoxb-short", "xox-" + tok(20), "XOXB-" + tok(20), "xoxb_" + tok(20),
        "slack.com/api/chat.postMessage", "xoxb", "axoxb-" + tok(20), "xoxo-" + tok(20), "xoxbp-" + tok(20),
    ],
    "stripe_key": [
        "s" + "k_live_short", "p" + "k_live_" + tok(24), "s" + "k_prod_" + tok(24), "ri" + "sk_live_" + tok(24),
        "sk_" + tok(24), "s" + "k_live_" + tok(15), "SK_LIVE_" + tok(24), "stripe.com/docs", "sk_live",
        "rk_" + tok(30),
    ],
    "google_api_key": [
        "AI" + "za" + tok(34), "ai" + "za" + tok(35), "AIzb" + tok(35), "AIza", "xAI" + "za" + tok(35),
        "AIza short", "AIZA" + tok(35), "googleapis.com/maps", "AI" + tok(35), "Aiza" + tok(35),
    ],
    "npm_token": [
        "np" + "m_" + tok(35), "np" + "m_" + tok(37), "npm_install", "NP" + "M_" + tok(36), "npm-" + tok(36),
        "xnp" + "m_" + tok(36), "npm", "npmjs.com/package/x", "npm_" + tok(36) + "_", "npm " + tok(36),
    ],
    "sendgrid_key": [
        "SG.short.x", "S" + "G." + tok(22), "sg." + tok(22) + "." + tok(43), "SG." + tok(21) + "." + tok(43),
        "SG." + tok(22) + "." + tok(42), "SG.", "sendgrid.com", "SG-" + tok(22) + "." + tok(43),
        "XSG." + tok(22) + "." + tok(43), "SG " + tok(22),
    ],
    "openai_key": [
        "s" + "k-" + tok(31), "s" + "k-" + "a" * 40, "task-" + tok(40), "disk-" + tok(40), "sk-" + "1" * 40,
        "SK-" + tok(40), "sk_" + tok(40), "sk-", "ask-me-anything", "risk-" + tok(40),
    ],
    "azure_key": [
        "AccountName=foo", "AccountKey=short", "signature=" + tok(40), "sig=short", "EndpointSuffix=core.windows.net",
        "DefaultEndpointsProtocol=https", "mysig=" + tok(30), "Account Key " + tok(30), "SharedAccessKeyName=root",
        "AccountKey:" + tok(30),
    ],
    "auth_header": [
        "authorization failed for user", "Authorization: ", "authorized: true", "cookie policy accepted",
        "no authorization header", "authorization_code grant", "Authorization: abc", "cookies=3",
        "set cookie banner", "unauthorized",
    ],
    "bearer_token": [
        "Bearer token", "Basic Authentication", "token expired", "the token abcdefghijkl", "Bearer",
        "basic auth", "token: ", "tokenize the input", "bearer of bad news", "token 1234567",
    ],
    "kv_secret": [
        "password_reset_count=3", "token_count=5", "max_tokens=100", "password reset requested",
        "secret_name=db", "tokenizer=bpe", "passwordless login enabled", "token=", "password: ",
        "pwdx=1", "secrets_manager=aws", "session_duration=30",
    ],
    "card": [
        "4111111111111112", "1700000000000000000", "order 4000123412341235", "0.4111111111111111",
        "4bf92f3577b34da6a3ce929d0e0e4736", "4444444444444444", "1234567890123456", "+44 20 7946 0958",
        "2026-11-23 10:30:00", "4111 1111 1111", "9111111111111111", "ts=1732355200123",
    ],
    "iban": [
        "DE89370400440532013001", "US12ABCDEFGH", "AB12 CDEF", "XX00123412341234", "de89370400440532013000",
        "ISO8601", "GB82WEST1234569876543X", "ABCD1234", "TR00 0000 0000 0000 0000 0000 00", "DE00" + "1" * 18,
    ],
    "ssn": [
        "000-12-3456", "666-12-3456", "900-12-3456", "999-99-9999", "123-00-4567", "123-45-0000",
        "2024-01-15", "12-345-6789", "1234-56-789", "123-456-789",
    ],
    "email": [
        "icon@2x.png", "@app.route('/x')", "user@localhost", "foo@bar", "a @ b . com", "@decorator",
        "version@1.2.3", "npm i pkg@latest", "@scope/pkg@1.0.0", "logo@3x.jpg",
    ],
    "ipv4": [
        "127.0.0.1", "0.0.0.0", "version 1.2.3", "v1.2.3.4", "oid 1.2.3.4.5", "999.1.1.1", "3.14159",
        "2026.11.23", "10.0.0", "ratio 0.5.6.7",
    ],
    "ipv6": [
        "::1", "::", "12:34:56", "00:1a:2b:3c:4d:5e", "std::vector<int>", "Foo::Bar", "10:30",
        "dead::beef::cafe", "2001:db8", "a:b:c:d",
    ],
    "phone": [
        "2026-11-23", "10.0.0.1", "1.2.3", "12:30:45", "v1.20.300", "12345", "order 12-34", "3.14159",
        "1 2 3", "+1",
    ],
}

DETECTOR_NAMES = [d.name for d in BUILTIN_DETECTORS]
ALL_ON = Masker(MaskerConfig(detectors={"phone": DetectorSetting(enabled=True)}))


def _params(table: dict[str, list[tuple[str, str]]] | dict[str, list[str]]) -> list[object]:
    return [pytest.param(name, case, id=f"{name}-{i}") for name, cases in table.items()
            for i, case in enumerate(cases)]


def test_every_detector_in_this_table_has_ten_positives_and_ten_negatives() -> None:
    """(Detectors added later have their cases in `masking_corpus.py`; `test_masking_corpus.py`
    checks that every detector has cases in one or the other.)"""
    assert set(POSITIVES) == set(NEGATIVES) <= set(DETECTOR_NAMES)
    for name, cases in POSITIVES.items():
        assert len(cases) >= 10, name
        assert len(NEGATIVES[name]) >= 10, name


@pytest.mark.parametrize(("detector", "case"), _params(POSITIVES))
def test_detector_masks_its_positive_and_the_secret_vanishes(detector: str, case: tuple[str, str]) -> None:
    text, secret = case
    result = ALL_ON.mask_many([text])
    assert result.counts[detector] >= 1, (text, result.counts)
    assert result.values[0] is not None
    assert secret not in result.values[0]


@pytest.mark.parametrize(("detector", "text"), _params(NEGATIVES))
def test_detector_ignores_its_look_alike(detector: str, text: str) -> None:
    assert ALL_ON.mask_many([text]).counts[detector] == 0


NO_FALSE_ALARMS = [
    "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "request 123e4567-e89b-12d3-a456-426614174000 done",
    "deployed commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "order 4000123412341235 shipped",
    "took 1234ms (1.234s), p99 987.65ms, 1500000000ns",
    "sluice 1.4.2 on python 3.11.9, grpcio 1.66.1",
    "GET /api/v1/users/{id}/orders/{order_id} 200",
    "SELECT * FROM users WHERE email = $1 AND password_hash = ? LIMIT 10",
    "UPDATE accounts SET balance = :balance WHERE id = %(id)s",
    "2026-11-23T10:30:00.123456Z INFO worker-3 flushed 1200 records",
    "ts=1732355200123456789 seq=1732355200",
    "Mon, 23 Nov 2026 10:30:00 GMT",
    "listening on 127.0.0.1:4317 and [::1]:4317",
    "image icon@2x.png not found",
    "user 42 logged in; tokens used: 1532; max_tokens=4096",
    "password reset email queued for user 42",
    "The token was rejected: invalid signature",
    "std::vector<int> resized to 1024",
    "hash sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
]


@pytest.mark.parametrize("text", NO_FALSE_ALARMS)
def test_everyday_log_content_is_left_unchanged(text: str) -> None:
    result = ALL_ON.mask_many([text])
    assert result.values[0] is None, result.counts


# -- encodings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "secret"), [
    ("body=%7B%22password%22%3A%22" + "hunter2x" + "%22%7D", "hunter2x"),
    ("password%3D" + "hunter2x" + "%26user%3Dbob", "hunter2x"),
    ("?token%3D" + "abc123xyz", "abc123xyz"),
    ('"{\\"password\\": \\"' + "hunter2x" + '\\", \\"user\\": \\"bob\\"}"', "hunter2x"),
    ('{\\"api_key\\":\\"' + tok(20) + '\\"}', tok(20)),
    ("payload=" + json.dumps(json.dumps({"secret": "s3cr3tv4lue"})), "s3cr3tv4lue"),
])
def test_json_escaped_and_url_encoded_secrets_are_caught(text: str, secret: str) -> None:
    masked = Masker().mask(text)
    assert secret not in masked
    assert "[REDACTED:kv_secret]" in masked


# -- a value ends where its context does ----------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("(password=hunter2)", "(password=[REDACTED:kv_secret])"),
    ("{password=hunter2}", "{password=[REDACTED:kv_secret]}"),
    ("[password=hunter2]", "[password=[REDACTED:kv_secret]]"),
    ("<password=hunter2>", "<password=[REDACTED:kv_secret]>"),
    ("`password=hunter2`", "`password=[REDACTED:kv_secret]`"),
    ("login(user=bob, token=abc123), retrying", "login(user=bob, token=[REDACTED:kv_secret]), retrying"),
    ("{'cfg': {password=hunter2}}", "{'cfg': {password=[REDACTED:kv_secret]}}"),
    ("(password=a(b))", "(password=[REDACTED:kv_secret])"),
    ("password=hunter2)", "password=[REDACTED:kv_secret])"),
    ("(Authorization: Bearer abc123xyz)", "(Authorization: Bearer [REDACTED:auth_header])"),
    ("(url ?password=abc&x=1)", "(url ?password=[REDACTED:kv_secret]&x=1)"),
])
def test_a_masked_value_keeps_the_closing_bracket_it_did_not_open(text: str, expected: str) -> None:
    assert Masker().mask(text) == expected


@pytest.mark.parametrize("text", [
    "password=pa)ss(wo]rd",  # closers inside a value, followed by more of it
    "password=f(a)b", "password=<hunter2>", "password=hun`ter2", "password={a:b}c",
])
def test_brackets_inside_a_value_stay_part_of_it(text: str) -> None:
    assert Masker().mask(text) == "password=[REDACTED:kv_secret]"


# -- the mask token is no hiding place ------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("password=[REDACTED:kv_secret]Hunter2", "password=[REDACTED:kv_secret]"),
    ("password=Hunter2[REDACTED:kv_secret]", "password=[REDACTED:kv_secret]"),
    ("password=Hun[REDACTED:email]ter2", "password=[REDACTED:kv_secret]"),
    ("password=[REDACTED:x]Hunter2", "password=[REDACTED:kv_secret]"),  # a look-alike token
    ("secret=[HASH:kv_secret:0123456789ab]Hunter2", "secret=[REDACTED:kv_secret]"),
    ("[HASH:kv_secret:0123456789ab]Hunter2", "[HASH:kv_secret:0123456789ab][REDACTED:kv_secret]"),
    ("postgres://app:[REDACTED:url_credentials]Hunter2@db/x", "postgres://app:[REDACTED:url_credentials]@db/x"),
    ("Authorization: [REDACTED:auth_header]Hunter2", "Authorization: [REDACTED:auth_header]"),
    ("Bearer [REDACTED:bearer_token]abc123xyz", "Bearer [REDACTED:bearer_token]"),
    ("[REDACTED:kv_secret]" + GHP + tok(36), "[REDACTED:kv_secret][REDACTED:github_token]"),
    ("[REDACTED:x]bob@example.com", "[REDACTED:x][REDACTED:email]"),
    ("[REDACTED:card]4111111111111111", "[REDACTED:card][REDACTED:card]"),
])
def test_text_glued_to_a_mask_token_is_still_masked(text: str, expected: str) -> None:
    masked = Masker().mask(text)
    assert masked == expected
    assert Masker().mask(masked) == masked


@pytest.mark.parametrize("text", [
    "password=[REDACTED:kv_secret]", "password=[REDACTED:kv_secret] [REDACTED:email]",
    '{"password": "[REDACTED:kv_secret] "}', "Authorization: Bearer [REDACTED:jwt]",
    "postgres://app:[REDACTED:url_credentials]@db/x", "Cookie: [REDACTED:auth_header]",
    "secret=[HASH:kv_secret:0123456789ab]", "password=[REDACTED:kv_secret][REDACTED:kv_secret]",
])
def test_values_that_are_only_tokens_are_left_alone(text: str) -> None:
    assert Masker().mask_many([text]).values[0] is None


# -- long strings -----------------------------------------------------------------------------------
CHUNKED = MaskerConfig(chunk_chars=1024, overlap_chars=256)


def test_long_string_is_scanned_everywhere_including_chunk_boundaries() -> None:
    """Secrets at every offset around window edges are masked; nothing passes unscanned."""
    filler = "lorem ipsum dolor sit amet " * 40
    parts = []
    secrets = []
    for i in range(60):
        secret = f"{GHP}{tok(30)}{i:06d}"
        secrets.append(secret)
        parts.append(filler[: 37 * i % 1000] + " " + secret + " ")
    text = "".join(parts)
    assert len(text) > 20 * 1024
    masked = Masker(CHUNKED).mask(text)
    assert not any(s in masked for s in secrets)
    assert masked.count("[REDACTED:github_token]") == 60


def test_private_key_spanning_a_chunk_edge_is_masked_whole() -> None:
    key = pem(f"RSA {PRIV}", body_lines=20)
    text = "x " * 500 + key + " tail"
    masked = Masker(CHUNKED).mask(text)
    assert "MII" not in masked
    assert masked.endswith("[REDACTED:private_key] tail")


def test_long_string_without_secrets_comes_back_unchanged() -> None:
    text = "GET /api/v1/orders 200 12ms " * 10_000
    assert Masker(CHUNKED).mask_many([text]).values[0] is None


# -- actions --------------------------------------------------------------------------------------
KEY = b"k" * 32


def masker_with(**settings: str) -> Masker:
    return Masker(MaskerConfig(
        detectors={name: DetectorSetting(action=action) for name, action in settings.items()},
        hash_key=KEY,
    ))


def test_mask_action_writes_the_detector_token() -> None:
    assert Masker().mask("card 4111111111111111") == "card [REDACTED:card]"


def test_hash_action_is_stable_keyed_and_hides_the_value() -> None:
    first = masker_with(email="hash").mask("from bob@example.com")
    again = masker_with(email="hash").mask("to bob@example.com").replace("to ", "from ")
    other_key = Masker(MaskerConfig(detectors={"email": DetectorSetting(action="hash")},
                                    hash_key=b"z" * 32)).mask("from bob@example.com")
    assert re.fullmatch(r"from \[HASH:email:[0-9a-f]{12}\]", first)
    assert first == again
    assert first != other_key
    assert "bob" not in first


@pytest.mark.parametrize(("detector", "text", "expected"), [
    ("card", "card 4111 1111 1111 1234".replace("1234", "1111"), "card [REDACTED:card]1111"),
    ("email", "mail bob@example.com", "mail [REDACTED:email]@example.com"),
    ("email", "?to=bob%40example.com", "?to=[REDACTED:email]%40example.com"),
    ("ipv4", "from 192.168.1.23", "from 192.168.1.x"),
    ("ipv6", "from 2001:db8:85a3::8a2e:370:7334", "from 2001:db8:85a3:x:x:x:x:x"),
    ("iban", "iban DE89370400440532013000", "iban [REDACTED:iban]3000"),
])
def test_partial_action_keeps_only_the_non_secret_part(detector: str, text: str, expected: str) -> None:
    assert masker_with(**{detector: "partial"}).mask(text) == expected


def test_ip_addresses_are_partially_kept_by_default() -> None:
    assert Masker().mask("client 10.20.30.40") == "client 10.20.30.x"


def test_drop_action_flags_the_string_and_still_masks_it() -> None:
    result = masker_with(ssn="drop").mask_many(["fine", "ssn 123-45-6789"])
    assert result.drop == {1}
    assert result.values[1] == "ssn [REDACTED:ssn]"


def test_partial_is_refused_for_detectors_without_a_safe_part() -> None:
    with pytest.raises(MaskingConfigError) as info:
        masker_with(jwt="partial")
    assert str(info.value) == "detectors.jwt.action: got 'partial'; expected one of: mask, hash, drop"


def test_hash_action_without_a_key_is_refused() -> None:
    with pytest.raises(MaskingConfigError, match="hash_key: the hash action and pseudonymisation need"):
        Masker(MaskerConfig(detectors={"email": DetectorSetting(action="hash")}))


def test_replacement_template_is_used_and_recognised_on_a_second_pass() -> None:
    masker = Masker(MaskerConfig(replacement="<{detector} removed>"))
    once = masker.mask("password=hunter2x and bob@example.com")
    assert once == "password=<kv_secret removed> and <email removed>"
    assert masker.mask(once) == once


@pytest.mark.parametrize("text", [case[0] for cases in POSITIVES.values() for case in cases])
def test_masking_is_idempotent(text: str) -> None:
    once = ALL_ON.mask(text)
    assert ALL_ON.mask_many([once]).values[0] is None


def test_disabled_detector_does_not_run() -> None:
    masker = Masker(MaskerConfig(detectors={"email": DetectorSetting(enabled=False)}))
    assert "email" not in masker.detectors
    assert masker.mask("bob@example.com") == "bob@example.com"


def test_phone_detector_is_off_by_default() -> None:
    assert Masker().mask("call +1 415 555 2671") == "call +1 415 555 2671"


# -- keys -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["password", "DB_PASSWORD", "http.request.header.authorization",
                                 "X-Api-Key", "set-cookie", "user.session", "client.secret",
                                 "private_key", "ConnectionString", "aws.access_key", "user.ssn",
                                 "customer.social_security_number", "card.cvv", "payment.cvc2", "door.passcode"])
def test_sensitive_keys_mask_the_whole_value(key: str) -> None:
    result = Masker().mask_many(["plain words"], [key])
    assert result.values[0] == "[REDACTED:sensitive_key]"


@pytest.mark.parametrize("key", ["token_count", "secret_name", "session.duration_ms", "user.id", "message"])
def test_ordinary_keys_are_scanned_not_masked_whole(key: str) -> None:
    assert Masker().mask_many(["plain words"], [key]).values[0] is None


def test_allow_listed_keys_keep_ids_but_not_secrets_or_addresses() -> None:
    """An allow-listed key (an id correlation depends on) is spared the detectors that take ids
    for personal data — a 19-digit snowflake id passes the Luhn check one time in ten — but a
    password, a token or an e-mail address under it is masked like anywhere else."""
    masker = Masker(MaskerConfig(allow_keys=("build.secret_hint",)))
    luhn_valid_id = "4111111111111111"
    result = masker.mask_many(
        ["bob@example.com", "password=x1y2z3", "bob@example.com", luhn_valid_id, luhn_valid_id,
         "10.0.3.7:8080", "Bearer abcdef0123456789abcdef0123456789"],
        ["http.route", "build.secret_hint", "other", "request.id", "other", "service.instance.id",
         "code.function"])
    assert result.values == [
        "[REDACTED:email]", "password=[REDACTED:kv_secret]", "[REDACTED:email]", None,
        "[REDACTED:card]", None, "Bearer [REDACTED:bearer_token]"]
    assert result.hits == {0: 1, 1: 1, 2: 1, 4: 1, 6: 1}
    assert result.counts == {"email": 2, "kv_secret": 1, "card": 1, "bearer_token": 1}


def test_extra_sensitive_keys_from_config() -> None:
    masker = Masker(MaskerConfig(sensitive_keys=("pin",)))
    assert masker.key_rule("card.PIN") is KeyRule.SENSITIVE
    assert masker.mask("1234", key="card.pin") == "[REDACTED:sensitive_key]"


def test_pseudonymised_keys_get_a_stable_keyed_token() -> None:
    config = MaskerConfig(pseudonymize_keys=("user.id", "enduser.id"), hash_key=KEY)
    masker = Masker(config)
    a = masker.mask("alice", key="user.id")
    b = Masker(config).mask("alice", key="enduser.id")
    assert re.fullmatch(r"pseu_[0-9a-f]{16}", a)
    assert a == b
    assert masker.mask("bob", key="user.id") != a
    assert masker.mask(a, key="user.id") == a


# -- custom detectors -----------------------------------------------------------------------------
def test_custom_detector_masks_its_matches_or_only_its_secret_group() -> None:
    masker = Masker(MaskerConfig(custom=(
        CustomDetector("acme_id", r"ACME-[0-9]{8}"),
        CustomDetector("badge", r"badge #(?P<secret>\d{5})"),
    )))
    assert masker.mask("ACME-12345678 badge #55555") == "[REDACTED:acme_id] badge #[REDACTED:badge]"


@pytest.mark.parametrize(("pattern", "message"), [
    (r"(a)\1", r"custom[0].pattern: got '(a)\\1'; uses '\\1': lookarounds and backreferences are not "
               "supported; patterns use RE2 syntax, which runs in linear time"),
    (r"foo(?=bar)", "custom[0].pattern: got 'foo(?=bar)'; uses '(?=': lookarounds and backreferences are not "
                    "supported; patterns use RE2 syntax, which runs in linear time"),
    (r"(?<!x)y", "custom[0].pattern: got '(?<!x)y'; uses '(?<!': lookarounds and backreferences are not "
                 "supported; patterns use RE2 syntax, which runs in linear time"),
    ("(unclosed", "custom[0].pattern: got '(unclosed'; is not a valid RE2 pattern (missing ): (unclosed)"),
    ("a*", "custom[0].pattern: got 'a*'; matches the empty string; a detector must match at least one "
           "character"),
])
def test_custom_patterns_are_checked_at_start_up(pattern: str, message: str) -> None:
    with pytest.raises(MaskingConfigError) as info:
        Masker(MaskerConfig(custom=(CustomDetector("mine", pattern),)))
    assert str(info.value) == message


def test_validators_luhn_and_mod97() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert mod97_valid("GB82WEST12345698765432")
    assert not mod97_valid("GB82WEST12345698765433")
