"""A corpus per detector kind: realistic secrets that must be masked, and look-alikes that must not.

Shared by the engine's corpus tests (`test_masking_corpus.py`) and the receiver's stage tests, so
every kind is proven both in the engine and through the receiver's raw pre-scan path. Values are
generated from a seeded RNG (realistic shapes, fixed across runs), and provider prefixes are
assembled at import time (`"gh" + "p_"`) so this file never holds a string a secret scanner flags.

`POSITIVES[kind]` lists (text, secret) pairs: the text must come out with `kind` counted and
without `secret` in it. `NEGATIVES[kind]` lists texts that must come out unchanged.
`BENIGN` holds everyday log content no detector may touch.
"""

from __future__ import annotations

import base64
import random
import string

_rng = random.Random(20261202)
ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "_-"


def rand(n: int, alphabet: str = ALNUM) -> str:
    """A random string of length n that holds at least one digit, upper- and lower-case letter
    when the alphabet has them (so case and digit checks see a realistic token)."""
    while True:
        out = "".join(_rng.choice(alphabet) for _ in range(n))
        needs = [set(string.digits), set(string.ascii_uppercase), set(string.ascii_lowercase)]
        if all(not (need & set(alphabet)) or need & set(out) for need in needs):
            return out


def b64_pem(kind: str, wrap: int = 0) -> str:
    body = base64.b64encode(_rng.randbytes(300)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    pem = "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----", ""])
    encoded = base64.b64encode(pem.encode()).decode()
    if wrap:
        encoded = "\n".join(encoded[i:i + wrap] for i in range(0, len(encoded), wrap))
    return encoded


def discord_token() -> str:
    user_id = str(_rng.randrange(10**17, 10**19))
    first = base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")
    return f"{first}.{rand(6, URLSAFE)}.{rand(38, URLSAFE)}"


PRIV = "PRIVATE" + " KEY"
SSN_OK = ["123456789", "078051120", "219099999", "457555462", "536228874", "772100001"]
PW = [rand(12), rand(9) + "!", "Tr0ub4dor&3".replace("&", "_"), rand(16, ALNUM + "!$*"), rand(20)]


def _slack_hook() -> str:
    return (f"https://hooks.slack.com/services/T{rand(8, string.ascii_uppercase + string.digits)}/"
            f"B{rand(10, string.ascii_uppercase + string.digits)}/{rand(24)}")


_B64_RSA = b64_pem(f"RSA {PRIV}")
_B64_EC = b64_pem(f"EC {PRIV}")
_B64_PKCS8 = b64_pem(PRIV, wrap=76)
_B64_OPENSSH = b64_pem(f"OPENSSH {PRIV}", wrap=64)
_SLACK = [_slack_hook() for _ in range(3)]
_PPK = rand(40, ALNUM + "+/")
_DISCORD = [discord_token() for _ in range(3)]

POSITIVES: dict[str, list[tuple[str, str]]] = {
    # -- widened forms of existing kinds ------------------------------------------------------------
    "url_credentials": [
        (f"connecting to postgres://app:p#a/{PW[0]}@s@db.internal:5432/orders", PW[0]),
        (f"mysql://root:{PW[1]}@w@rd@10.0.0.5/shop", PW[1][:6]),
        (f"redis://:{PW[2]}/x?y@cache:6379/0", PW[2]),
        (f"amqp://svc:{PW[3]}#frag@rabbit.internal//", PW[3][:8]),
        (f'{{"dsn": "mongodb://admin:q@{PW[4]}@mongo-0.db:27017/app"}}', PW[4]),
        ("https://deploy:V3tN6dK0N0@4lO7@git.example.com/repo.git", "V3tN6dK0N0@4lO7"),
    ],
    "kv_pass": [
        (f"GET /login?user=alice&pass={PW[0]}&next=%2F 302", PW[0]),
        (f"POST /api/session?pw={PW[1]} 401", PW[1]),
        (f"redirect https://app.example.com/cb?user=bob&pswd={PW[2]}", PW[2]),
        (f"form user=carol&passw={PW[3]}&remember=1", PW[3]),
        (f"env DB_PASS={PW[4]} SMTP_HOST=mail", PW[4]),
        (f"smtp_pass: {PW[0]}", PW[0]),
        (f"keytool -storepass={PW[1]}", PW[1]),
        (f'{{"redis.pass": "{PW[2]}"}}', PW[2]),
        (f"APP_PASS={PW[3]}", PW[3]),
        (f"(rootpass={PW[4]})", PW[4]),
        (f"body: pass={PW[0]}&user=alice&remember=1", PW[0]),
    ],
    "kv_secret": [
        (f"<soap:Body><Login><user>bob</user><password>{PW[2]}</password></Login>", PW[2]),
        (f"<ns1:ApiKey>{rand(32)}</ns1:ApiKey>", ""),
        (f"X-Amz-Signature={rand(64, HEX)}&X-Amz-Date=20261202T000000Z", ""),
        ("passcode=604913", "604913"),
        (f"Passwort: {PW[3]}", PW[3]),
        (f"(password={PW[4]})", PW[4]),
        (f"Cookie-less PHPSESSID={rand(26, string.ascii_lowercase + string.digits)}; path=/", ""),
    ],
    "ssn": [
        (f"ssn={SSN_OK[0]}", SSN_OK[0]),
        (f'{{"ssn": "{SSN_OK[1]}", "name": "x"}}', SSN_OK[1]),
        (f"SSN# {SSN_OK[2]}", SSN_OK[2]),
        (f"customer.ssn: {SSN_OK[3]}", SSN_OK[3]),
        (f"social_security_number={SSN_OK[4]}", SSN_OK[4]),
        ("ssn: 536-22-8874", "536-22-8874"),
        (f"<SSN>{SSN_OK[5]}</SSN>", SSN_OK[5]),
        ("applicant ssn 772.10.0001 verified", "772.10.0001"),
    ],
    "private_key": [
        (f"tls.key: {_B64_RSA}", _B64_RSA[20:60]),
        (f'{{"data": {{"key.pem": "{_B64_EC}"}}}}', _B64_EC[20:60]),
        (f"PRIVATE_KEY_B64={_B64_PKCS8}", _B64_PKCS8[100:140]),
        (_B64_OPENSSH, _B64_OPENSSH[-40:]),
        (f"key={_B64_PKCS8.replace(chr(10), chr(92) + 'n')}", _B64_PKCS8[200:240]),
        ("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\n"
         f"AAAAI{_PPK}\nPrivate-MAC: {rand(64, HEX)}", _PPK),
    ],
    "azure_key": [
        (f"client_secret {rand(3)}8Q~{rand(34, URLSAFE + '.~')}", ""),
        (f"AZURE_CLIENT_SECRET={rand(3)}7Q~{rand(31, URLSAFE + '.~')}", ""),
        (f'"secretText": "{rand(3)}5Q~{rand(34, URLSAFE)}"', ""),
    ],
    "auth_header": [
        (f"Authorization: SSWS 00{rand(40, URLSAFE)}", ""),
        (f'Cookie: session="{rand(32)}"; theme=dark', ""),
        (f"Set-Cookie: sid={rand(24)}; Path=/; HttpOnly", ""),
        (f"{{'Cookie': 'sid={rand(20)}', 'Accept': '*/*'}}", ""),
        (f"(Authorization: Bearer {rand(30)})", ""),
    ],
    "gitlab_token": [
        ("gl" + f"dt-{rand(20, URLSAFE)}", ""), ("gl" + f"rt-{rand(20, URLSAFE)}", ""),
        ("gl" + f"ptt-{rand(40, HEX)}", ""), ("GR134" + f"8941{rand(20, URLSAFE)}", ""),
    ],
    "slack_token": [
        ("xa" + f"pp-1-A{rand(10, string.ascii_uppercase + string.digits)}-{rand(13, string.digits)}-{rand(64, HEX)}",
         ""),
        ("xo" + f"xe.xoxp-1-{rand(140)}", ""), ("xo" + f"xe-1-{rand(140)}", ""),
    ],
    "stripe_key": [
        ("wh" + f"sec_{rand(32)}", ""), ("STRIPE_WEBHOOK_SECRET=wh" + f"sec_{rand(38)}", ""),
        ("s" + f"k_live_{rand(99)}", ""),
    ],
    # -- new kinds ----------------------------------------------------------------------------------
    "webhook_url": [
        (f"posting alert to {_SLACK[0]}", _SLACK[0].rsplit("/", 1)[1]),
        (f'{{"webhook": "{_SLACK[1]}"}}', _SLACK[1].rsplit("/", 1)[1]),
        (f"SLACK_WEBHOOK_URL={_SLACK[2]}", _SLACK[2].rsplit("/", 1)[1]),
        (f"https://hooks.slack.com/workflows/T{rand(10, string.ascii_uppercase)}/A{rand(10)}/"
         f"{rand(18, string.digits)}/{rand(24)}", ""),
        (f"https://discord.com/api/webhooks/{rand(18, string.digits)}/{rand(68, URLSAFE)}", ""),
        (f"https://contoso.webhook.office.com/webhookb2/{rand(8, HEX)}-aaaa-bbbb-cccc-{rand(12, HEX)}@"
         f"{rand(8, HEX)}/IncomingWebhook/{rand(32, HEX)}/{rand(8, HEX)}", ""),
        ("https://hooks.zapier.com/hooks/catch/6720663/dahsrx/", "dahsrx"),
    ],
    "cli_password": [
        (f"exec: mysql -h db -u root -p{PW[0]} orders", PW[0]),
        (f"mysqldump --single-transaction -uadmin -p'{PW[1]}' shop > dump.sql", PW[1]),
        (f'mariadb -u app -p"{PW[2]}" -e "select 1"', PW[2]),
        (f"sshpass -p {PW[3]} ssh deploy@web-1", PW[3]),
        (f"redis-cli -h cache -a {PW[4]} ping", PW[4]),
        (f"curl -s -u admin:{PW[0]} https://api.example.com/v1/status", PW[0]),
        (f"ldapsearch -x -D cn=admin,dc=example,dc=org -w {PW[1]} -b dc=example,dc=org", PW[1]),
        (f"sqlcmd -S db01 -U sa -P {PW[2]} -Q 'SELECT 1'", PW[2]),
        (f"mongosh --username admin --password {PW[3]} mongodb://db/app", PW[3]),
        (f"machine api.example.com login deploy password {PW[4]}", PW[4]),
        (f"CREATE USER 'app'@'%' IDENTIFIED BY '{PW[0]}';", PW[0]),
        (f'ALTER ROLE reporting WITH LOGIN PASSWORD "{PW[1]}"', PW[1]),
        (f"statement: ALTER USER svc IDENTIFIED BY PASSWORD '{PW[2]}'", PW[2]),
    ],
    "card_cvv": [
        ("card_cvv=123 exp=12/29", "=123"), ('{"cvc": "4821"}', "4821"), ("CVV2: 907", "907"),
        ("security_code=044", "044"), ("payment.card_verification_value: 318", "318"),
    ],
    "google_oauth": [
        ("GO" + f"CSPX-{rand(28, URLSAFE)}", ""), ("access_tok ya" + f"29.{rand(120, URLSAFE)}", ""),
        ("refresh 1/" + f"/0{rand(60, URLSAFE)}", ""),
    ],
    "aws_session_token": [
        ("IQoJb3JpZ2luX2Vj" + rand(300, ALNUM + "+/") + "==", ""),
        ("session FwoGZXIvYXdzE" + rand(200, ALNUM + "+/"), ""),
        ('"SessionToken": "IQoJb3JpZ2luX2Vj' + rand(400, ALNUM + "+/") + '"', ""),
    ],
    "pypi_token": [("py" + f"pi-AgEIcHlwaS5vcmc{rand(60, URLSAFE)}", ""),
                   ("TWINE_PASSWORD=py" + f"pi-AgENdGVzdC5weXBpLm9yZw{rand(70, URLSAFE)}", ""),
                   ("token py" + f"pi-AgEIcHlwaS5vcmcC{rand(120, URLSAFE)}", "")],
    "docker_token": [("dc" + f"kr_pat_{rand(27, URLSAFE)}", ""), ("dc" + f"kr_oat_{rand(32, URLSAFE)}", ""),
                     ("docker login -p dc" + f"kr_pat_{rand(27, URLSAFE)}", "")],
    "huggingface_token": [("h" + f"f_{rand(34, string.ascii_letters)}", ""), ("HF_TOKEN=h" + f"f_{rand(34)}", ""),
                          ("using h" + f"f_{rand(37)}", "")],
    "digitalocean_token": [("do" + f"p_v1_{rand(64, HEX)}", ""), ("do" + f"o_v1_{rand(64, HEX)}", ""),
                           ("do" + f"r_v1_{rand(64, HEX)}", "")],
    "hashicorp_token": [("hv" + f"s.{rand(90, URLSAFE)}", ""), ("VAULT_TOKEN=hv" + f"b.{rand(120, URLSAFE)}", ""),
                        (f"{rand(14)}.atlas" + f"v1.{rand(67, URLSAFE)}", "")],
    "shopify_token": [("sh" + f"pat_{rand(32, HEX)}", ""), ("sh" + f"pss_{rand(32, HEX)}", ""),
                      ("sh" + f"pca_{rand(32, HEX)}", "")],
    "twilio_key": [("S" + f"K{rand(32, HEX)}", ""), ("TWILIO_API_KEY=S" + f"K{rand(32, HEX)}", ""),
                   ("api key S" + f"K{rand(32, HEX)} created", "")],
    "mailchimp_key": [(f"{rand(32, HEX)}-us" + "14", ""), (f"MAILCHIMP_KEY={rand(32, HEX)}-us" + "6", ""),
                      (f"key {rand(32, HEX)}-us" + "21 ok", "")],
    "telegram_token": [(f"{rand(10, string.digits)}:AA{rand(33, URLSAFE)}", ""),
                       (f"https://api.telegram.org/bot{rand(9, string.digits)}:AA{rand(33, URLSAFE)}/sendMessage",
                        ""),
                       (f"TELEGRAM_TOKEN={rand(10, string.digits)}:AA{rand(33, URLSAFE)}", "")],
    "discord_token": [(f"Bot {_DISCORD[0]}", _DISCORD[0].split(".")[2]),
                      (f"DISCORD_TOKEN={_DISCORD[1]}", _DISCORD[1].split(".")[2]),
                      (f'{{"token": "{_DISCORD[2]}"}}'.replace("token", "tok"), _DISCORD[2].split(".")[2])],
    "atlassian_token": [("ATA" + f"TT3{rand(180, URLSAFE + '=')}", ""), ("JIRA_API_TOKEN=ATA" + f"TT3{rand(186)}", ""),
                        ("using ATA" + f"TT3x{rand(190, URLSAFE)}", "")],
    "databricks_token": [("da" + f"pi{rand(32, HEX)}", ""), ("DATABRICKS_TOKEN=da" + f"pi{rand(32, HEX)}-2", ""),
                         ("token da" + f"pi{rand(32, HEX)} ok", "")],
    "newrelic_key": [("NR" + f"AK-{rand(27, string.ascii_uppercase + string.digits)}", ""),
                     ("NR" + f"JS-{rand(19, string.ascii_uppercase + string.digits)}", ""),
                     ("insert NR" + f"II-{rand(32, string.ascii_uppercase + string.digits)}", "")],
    "grafana_token": [("gl" + f"c_{rand(80, ALNUM + '+/')}==", ""),
                      ("gl" + f"sa_{rand(32)}_{rand(8, HEX)}", ""),
                      ("GRAFANA_TOKEN=gl" + f"c_{rand(120)}", "")],
    "age_key": [("AGE-SECRET" + "-KEY-1" + rand(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"), "")
                for _ in range(3)],
    "square_token": [("sq0" + f"atp-{rand(22, URLSAFE)}", ""), ("sq0" + f"csp-{rand(43, URLSAFE)}", ""),
                     ("SQUARE_TOKEN=sq0" + f"atp-{rand(22, URLSAFE)}", "")],
    "alibaba_key": [("LT" + f"AI{rand(20)}", ""), ("ALIBABA_ACCESS_KEY_ID=LT" + "AI" + "k3Xy9Qm2Pw7Rt4Zv", "k3Xy9Qm2Pw7Rt4Zv"),
                    ("id LT" + f"AI{rand(12)} used", "")],
    "sentry_token": [("sn" + f"trys_eyJ{rand(120, URLSAFE)}", ""), ("sn" + f"tryu_{rand(64, HEX)}", ""),
                     ("SENTRY_AUTH_TOKEN=sn" + f"trys_{rand(80)}", "")],
    "linear_key": [("li" + f"n_api_{rand(40)}", ""), ("li" + f"n_oauth_{rand(40)}", ""),
                   ("LINEAR_KEY=li" + f"n_api_{rand(40)}", "")],
    "postman_key": [("PM" + f"AK-{rand(24, HEX)}-{rand(34, HEX)}", "") for _ in range(3)],
    "doppler_token": [("dp" + f".pt.{rand(43)}", ""), ("dp" + f".st.{rand(40)}", ""), ("dp" + f".sa.{rand(44)}", "")],
    "pulumi_token": [("pu" + f"l-{rand(40, HEX)}", "") for _ in range(3)],
    "supabase_token": [("sb" + f"p_{rand(40, HEX)}", ""), ("sb" + f"_secret_{rand(32, URLSAFE)}", ""),
                       ("SUPABASE_TOKEN=sb" + f"p_{rand(40, HEX)}", "")],
}

NEGATIVES: dict[str, list[str]] = {
    "url_credentials": [
        "http://host:8080/path?u=a@b", "https://example.com:443/users/me@home",
        "ftp://files.example.org:21/pub/icon@2x.png", "http://[::1]:8080/health", "redis://localhost:6379/0",
        "https://cdn.example.com:8443/img/logo@3x.jpg", "http://host:80?next=a@b", "svn://repo:3690/trunk@1234",
    ],
    "kv_pass": [
        "tests: pass=12 fail=0 skip=3", "bypass=true", "compass=north", "first_pass=ok", "pass: 10/10",
        "GET /search?q=pass&page=2", "CACHE_BYPASS=1", "?passive=true", "second_pass: done",
    ],
    "kv_secret": [
        "password_changed_at=2026-01-01", "token_type=bearer", "secret_version=3", "signature_valid=true",
        "GET /search?q=pass&page=2", "password policy: strict",
    ],
    "ssn": [
        "ssn_verified=true", "ssn: missing", "ssn=unknown", "ssn=000123456", "ssn=666123456", "ssn=912345678",
        "ssn=123456789012", "className=com.example.Foo id=123456789", "classname 123456789",
    ],
    "private_key": [
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSURkekNDQWwrZ0F3SUJBZ0lFQWdBQUF",
        "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0KTUlJQklqQU5CZ2txaGtpRzl3MEJBUUVGQUFP",
        "LS0tLS1CRUdJTi", "base64 LS0tLS1 truncated",
    ],
    "azure_key": ["Q~ marks the spot", "v1.2Q~3", "ratio 8Q~1"],
    "auth_header": ["authorization failed for user", "no authorization header", "cookie policy accepted"],
    "webhook_url": [
        "https://hooks.slack.com/services", "https://api.slack.com/messaging/webhooks",
        "see hooks.slack.com/services/ for setup", "https://discord.com/api/webhooks",
        "https://discord.com/developers/docs/resources/webhook",
    ],
    "cli_password": [
        "mysql -u root -p", "mysql -h db -P 3306 -u app -p orders", "invalid password for user bob",
        "password reset requested", "CREATE USER app IDENTIFIED WITH caching_sha2_password", "psql -p 5432 -U app",
        "curl -s https://example.com/health", "User-Agent: curl/8.4.0", "redis-cli -h cache ping",
        "sshpass not installed", "mysql connection pool exhausted", "the machine is up",
    ],
    "card_cvv": [
        "cvv_check=pass", "cvc: required", "security_code_length=3", "cvv=12345", "csc_version=1234.5",
        "security code sent",
    ],
    "google_oauth": ["GOCSPX-short", "ya29.short", "1//0short"],
    "aws_session_token": ["IQoJb3JpZ2luX2Vj", "FwoGZXIvYXdzEshort"],
    "pypi_token": ["pypi-AgE", "pypi-simple index", "pip install pypi-AgEx"],
    "docker_token": ["dckr_pat_short", "dckr_xyz_" + "a" * 30, "docker login"],
    "huggingface_token": ["hf_" + "a" * 34, "hf_" + "A" * 34, "hf_hub_download", "hf_" + rand(33)],
    "digitalocean_token": ["dop_v1_short", "dop_v1_" + "g" * 64, "dop_v2_" + rand(64, HEX)],
    "hashicorp_token": ["hvs.short", "hvx." + rand(30), "terraform.atlasv1 docs"],
    "shopify_token": ["shpat_short", "shpat_" + rand(31, HEX), "shpxx_" + rand(32, HEX)],
    "twilio_key": ["SK" + rand(31, HEX), "SKU" + rand(32, HEX), "sk" + rand(32, HEX)],
    "mailchimp_key": [rand(32, HEX), rand(31, HEX) + "-us14", rand(32, HEX) + "-usa"],
    "telegram_token": [rand(10, string.digits) + ":AB" + rand(33), "12:30:45", rand(10, string.digits) + ":AA" + rand(32)],
    "discord_token": [
        "MTIz.abcdef." + rand(27), "N" + rand(25) + "." + rand(6) + "." + rand(30),  # not a user id inside
        "com.example.Service.method",
    ],
    "atlassian_token": ["ATATT3short", "ATATT" + rand(180)],
    "databricks_token": ["dapi" + rand(31, HEX), "dapi" + "g" * 32, "dapi_version=2"],
    "newrelic_key": ["NRAK-short", "NRXX-" + rand(27, string.ascii_uppercase), "nrak-" + rand(27).lower()],
    "grafana_token": ["glc_short", "glsa_short_token", "glc_" + rand(31)],
    "age_key": ["AGE-SECRET-KEY-1short", "AGE-PUBLIC-KEY-1" + "Q" * 58],
    "square_token": ["sq0atp-short", "sq0xyz-" + rand(22)],
    "alibaba_key": ["LTAI" + "a" * 20, "LTAI" + rand(11), "LTAIS"],
    "sentry_token": ["sntrys_short", "sentry_environment=production"],
    "linear_key": ["lin_api_short", "lin_api_" + rand(39)],
    "postman_key": ["PMAK-short", "PMAK-" + rand(24, HEX)],
    "doppler_token": ["dp.pt.short", "dp.xx." + rand(43)],
    "pulumi_token": ["pul-short", "pul-" + rand(39, HEX)],
    "supabase_token": ["sbp_short", "sbp_" + rand(39, HEX), "sb_secret_short"],
}

# Everyday log content: ids, times, versions, hashes, ports, durations and non-personal addresses.
BENIGN: list[str] = [
    "order ORD-2026-000123 shipped", "order #123456789 total 42.50 EUR", "invoice 2024-0001-0002",
    "id 000-12-3456 processed", "ref 900-12-3456", "SKU 123-456-789", "range 100-200-300",
    "request 123e4567-e89b-12d3-a456-426614174000 done", "uuid=550e8400-e29b-41d4-a716-446655440000",
    "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
    "deployed commit 9fceb02d0ae598e95dc970b74767f19372d61af8", "md5 d41d8cd98f00b204e9800998ecf8427e",
    "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    "2026-11-23T10:30:00.123Z worker-3 flushed 1200 records", "2026-11-23 10:30:00 INFO start",
    "date 23.11.2026 10:30", "at 10:30:00.123456", "elapsed 00:00:01.234", "ts=1732355200123456789",
    "epoch 1732355200 ms 1732355200123", "Mon, 23 Nov 2026 10:30:00 GMT",
    "sluice 1.4.2 on python 3.11.9", "version 10.2.3-rc.4+build.5114f85", "v2026.11.23", "semver ^1.2.3",
    "listening on :8080", "port 5432", "bind 0.0.0.0:4317", "connect 127.0.0.1:6379", "[::1]:4317",
    "networks 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16", "route fe80::/10 via eth0", "2001:db8::/32 allowed",
    "took 1234ms (1.234s), p99 987.65ms, 1500000000ns", "latency p50=12ms p99=1200ms", "timeout=30s",
    "stats 123 456 7890", "counts: 100 200 300 400", "range 1000 2000 3000", "coords 51.5074 -0.1278",
    "ISBN 978-3-16-148410-0", "tracking 1Z999AA10123456784", "mac 00:1A:2B:3C:4D:5E", "ratio 1:2:3",
    "GET /api/v1/users/12345/orders/67890 200 12ms", "pid 12345 ppid 1", "pod web-7d4b9c8f6-x2x9z",
    "tests: pass=12 fail=0", "bypass=true", "first_pass=ok", "token_count=5 max_tokens=4096",
    "password reset requested for user 42", "The token was rejected: invalid signature",
    "User-Agent: curl/8.4.0", "mysql -u root -p", "ssn_verified=true", "cvv_check=pass",
    "f(a=1) (user=bob) {id=42} [level=info]", "https://hooks.slack.com/services",
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSURkekNDQWwrZ0F3SUJBZ0lFQWdBQUF",
    "http://host:8080/path?u=a@b", "icon@2x.png", "npm i pkg@latest", "std::vector<int>",
]
