"""Log formats and redaction, through a real interpreter's stderr (`python -c`)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from dnsfailover.logs import RateLimitedLog, redact

SECRET = "hunter2-Zq8x1"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.sig0123"

SCRIPT = f"""
import logging
from dnsfailover.logs import setup_logging
setup_logging(logging.INFO, {{fmt!r}})
log = logging.getLogger("dnsfailover.test")
log.debug("not shown at INFO")
log.info("apply: zone=%s changes=%d", "example.test.", 3)
log.warning("provider said: Authorization: Bearer {TOKEN}")
log.error("connect to postgres://app:{SECRET}@db/x failed; password={SECRET}")
try:
    raise RuntimeError("boom with secret={SECRET}")
except RuntimeError:
    log.exception("sync: failed")
"""


def run(fmt: str, script: str = SCRIPT) -> list[str]:
    code = textwrap.dedent(script).replace("{fmt!r}", repr(fmt))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout == ""
    return proc.stderr.splitlines()


def test_json_lines_parse_and_mask_secrets() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    lines = run("json")
    docs = [json.loads(line) for line in lines]  # one object per line, every line
    assert [(d["level"], d["logger"]) for d in docs] == [
        ("INFO", "dnsfailover.test"),
        ("WARNING", "dnsfailover.test"),
        ("ERROR", "dnsfailover.test"),
        ("ERROR", "dnsfailover.test"),
    ]
    assert docs[0]["message"] == "apply: zone=example.test. changes=3"
    assert docs[1]["message"] == "provider said: Authorization: ***"
    assert docs[2]["message"] == "connect to postgres://app:***@db/x failed; password=***"
    assert docs[3]["message"] == "sync: failed"
    assert docs[3]["exc"].startswith("Traceback (most recent call last):")
    assert docs[3]["exc"].endswith("RuntimeError: boom with secret=***")
    for doc in docs:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"]), doc["ts"]
        ts = datetime.strptime(doc["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before <= ts <= datetime.now(UTC)
    assert SECRET not in "\n".join(lines)
    assert TOKEN not in "\n".join(lines)


def test_human_format_is_what_basic_config_wrote() -> None:
    """The default stays byte-for-byte the format `cli.py` had with logging.basicConfig."""
    ours = run("human")
    basic = run(
        "human",
        SCRIPT.replace(
            "setup_logging(logging.INFO, {fmt!r})",
            "logging.basicConfig(level=logging.INFO, "
            "format='%(asctime)s %(levelname)s %(name)s: %(message)s')",
        ),
    )
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
    assert all(stamp.match(line) for line in ours[:4])
    assert ours[0].endswith(" INFO dnsfailover.test: apply: zone=example.test. changes=3")
    # Same lines apart from the time stamps and the masked secrets.
    assert len(ours) == len(basic)
    for mine, theirs in zip(ours, basic, strict=True):
        assert stamp.sub("", mine) == redact(stamp.sub("", theirs))
    assert SECRET not in "\n".join(ours)
    assert SECRET in "\n".join(basic)  # what redaction is there for


def test_setup_twice_replaces_the_handler() -> None:
    script = SCRIPT.replace(
        "setup_logging(logging.INFO, {fmt!r})",
        "setup_logging(logging.INFO, 'human'); setup_logging(logging.INFO, {fmt!r})",
    )
    lines = run("json", script)
    # Only JSON: one line per record (the traceback is inside the last one), no human lines.
    assert [json.loads(line)["level"] for line in lines] == ["INFO", "WARNING", "ERROR", "ERROR"]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Authorization: Bearer abcdefgh12345", "Authorization: ***"),
        ('{"authorization": "Basic dXNlcjpwYXNz"}', '{"authorization": "***"}'),
        ("sent Bearer abcdefgh12345 upstream", "sent Bearer *** upstream"),
        ("secret=abc123 next", "secret=*** next"),
        ("client_secret: 'x y z'", "client_secret: ***"),
        ('{"password": "p@ss w0rd", "user": "bob"}', '{"password": ***, "user": "bob"}'),
        ("https://h/cb?token=abc&x=1", "https://h/cb?token=***&x=1"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY=***"),
        ("key AKIAIOSFODNN7EXAMPLE used", "key *** used"),
        ("https://admin:pw123@example.test/x", "https://admin:***@example.test/x"),
    ],
)
def test_redact_masks_credentials(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "engine: failover api.example.test.: 192.0.2.1 -> 198.51.100.1: tier primary down",
        "basic health checks passed",
        "rate limit: tokens=5 burst=10",
        "webhook key from secret_env=DNSF_HOOK_KEY",
        "health: web/192.0.2.1:80 up -> down: HTTP 503 (expected 200)",
        "https://hooks.example.test:443/path",
    ],
)
def test_redact_leaves_ordinary_lines_alone(text: str) -> None:
    assert redact(text) == text


def test_human_lines_escape_control_characters_but_keep_tracebacks() -> None:
    """A value a client chose (an override's reason) cannot start a line that reads as a
    record of its own; the JSON format already keeps it in one string."""
    forged = "2026-01-01 00:00:00,000 WARNING dnsfailover.api: override removed by admin"
    script = SCRIPT.replace(
        'log.debug("not shown at INFO")',
        f"log.info('override set: %s', 'kernel\\n{forged}\\r\\x1b[2K\\u2028end')",
    )
    lines = run("human", script)
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
    assert lines[0].endswith(f"override set: kernel\\n{forged}\\r\\x1b[2K\\u2028end")
    assert not [line for line in lines if line.startswith(forged)]
    assert lines.index("Traceback (most recent call last):") > 0  # still on its own lines
    assert all(stamp.match(line) for line in lines[:5])


def test_a_protected_secret_is_masked_wherever_it_appears() -> None:
    """The API token without a label next to it, as aiohttp's parser error quotes a folded
    header's continuation line, and as Python shows it in bytes."""
    token = "tok-Zq8x1-0123456789"
    script = f"""
import logging
from dnsfailover.logs import protect, setup_logging
setup_logging(logging.INFO, {{fmt!r}})
protect({token!r})
log = logging.getLogger("aiohttp.server")
log.warning("Invalid header value char:\\n\\n  b' {token}'\\n    ^")
log.warning("%r", {token!r}.encode())
log.warning("nothing secret here: tok-Zq8x1")
"""
    for fmt in ("human", "json"):
        text = "\n".join(run(fmt, script))
        assert token not in text
        assert "b' ***'" in text
        assert "tok-Zq8x1" in text  # a prefix alone is no secret


def test_rate_limited_log_says_how_many_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(
        logging.getLogger("dnsfailover.test"), period=60.0, burst=3, clock=lambda: now[0]
    )
    caplog.set_level(logging.INFO)
    written = [limited.log(logging.WARNING, "api: bad request %d", i) for i in range(1000)]
    assert written.count(True) == 3
    now[0] = 61.0
    assert limited.log(logging.WARNING, "api: bad request %d", 1000)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "api: bad request 0",
        "api: bad request 1",
        "api: bad request 2",
        "api: bad request 1000 (997 similar messages suppressed)",
    ]
    assert limited.total_suppressed == 997
