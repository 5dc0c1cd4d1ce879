"""Logging setup: human lines by default, one JSON object per line for machines.

Both formats pass through `RedactingFilter`, a last line of defence: the code never logs
secret values on purpose, but an exception from a library can carry a header, a URL with
credentials or a `password=` setting, and logs are shipped to places secrets must not go.
Patterns catch what looks like a credential; secrets the process knows (the API token) are
registered with `protect` and masked wherever they appear, with or without a label (a
folded `Authorization` header puts the token alone on a line of aiohttp's parser error).

The human format escapes control characters in the message (`\\n`, `\\x1b`), so text a
client controls (an override's reason) cannot forge a log line; tracebacks keep their lines.
`RateLimitedLog` bounds what one noisy source (bad requests, probes that cannot open a
socket) can write.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, TextIO

LogFormat = Literal["human", "json"]
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"

_KEYS = (
    r"[\w.-]*(?:secret|password|passwd|passphrase|token|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|credentials?|signature)"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer abc / "authorization": "Basic abc" / Proxy-Authorization=...
    (
        re.compile(r"""((?:proxy-)?authorization["']?\s*[:=]\s*["']?)[^"'\r\n,}]+""", re.I),
        rf"\g<1>{MASK}",
    ),
    (re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), rf"\g<1> {MASK}"),
    # secret=abc, "password": "abc", api_key: abc, ?token=abc&
    (
        re.compile(rf"""\b({_KEYS}["']?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s"'&,;}}\]]+)""", re.I),
        rf"\g<1>{MASK}",
    ),
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@", re.I), rf"\g<1>{MASK}@"),
    # AWS access key ids
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),
)


MIN_SECRET = 8  # shorter values would mask ordinary words
_secrets: frozenset[str] = frozenset()
_secrets_lock = threading.Lock()


def protect(secret: str) -> None:
    """Mask `secret` itself in every log record from now on (the process's lifetime).

    Its printable forms are masked too: as Python shows it in a `repr` or in `bytes`.
    """
    global _secrets
    if len(secret) < MIN_SECRET:
        return
    forms = {secret, repr(secret)[1:-1], repr(secret.encode("utf-8", "replace"))[2:-1]}
    with _secrets_lock:
        _secrets = _secrets | {f for f in forms if len(f) >= MIN_SECRET}


def redact(text: str) -> str:
    """`text` with the protected secrets and anything that looks like a credential replaced
    by `***`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(m: re.Match[str]) -> str:
    char = m.group()
    code = ord(char)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    return named or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """`text` on one line: newlines, escapes and other control characters as `\\n`, `\\x1b`."""
    return _CONTROL.sub(_escape_char, text)


class HumanFormatter(logging.Formatter):
    """`HUMAN_FORMAT`, one record per line: the message's control characters escaped, so
    a value a client chose cannot start a line that looks like another record (tracebacks
    and stacks, which only the process writes, keep their lines)."""

    def __init__(self) -> None:
        super().__init__(HUMAN_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class RateLimitedLog:
    """At most `burst` records per `period` seconds for one noisy source; the first record
    after a quiet spell says how many were left out.  Safe to call from any thread."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        period: float = 60.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.period, self.burst, self._clock = logger, period, burst, clock
        self._window = -period
        self._count = 0
        self.suppressed = 0  # left out since the last record written
        self.total_suppressed = 0
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object, exc_info: object = None) -> bool:
        """Log `msg % args` at `level` unless over the budget; whether it was written."""
        if not self.logger.isEnabledFor(level):
            return False
        with self._lock:
            now = self._clock()
            if now - self._window >= self.period:
                self._window, self._count = now, 0
            if self._count >= self.burst:
                self.suppressed += 1
                self.total_suppressed += 1
                return False
            self._count += 1
            left_out, self.suppressed = self.suppressed, 0
        if left_out:
            msg += " (%d similar messages suppressed)"
            args = (*args, left_out)
        self.logger.log(level, msg, *args, exc_info=exc_info)  # type: ignore[arg-type]
        return True


class RedactingFilter(logging.Filter):
    """Masks credentials in the message and the exception text of every record.

    The record is rewritten in place (message formatted, args dropped, `exc_text` set), so
    every handler after this one sees only the masked text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


FIELDS = "fields"
"""The `extra=` key whose mapping a JSON log line carries as top-level keys (`fields`)."""


def fields(**values: object) -> dict[str, object]:
    """`extra=` for a log call whose record carries data (name, zone, endpoint, region, old,
    new, reason, serial...): top-level keys of its JSON line, beside the message people
    read.  (`name` cannot be a record attribute: it is the logger's.)"""
    return {FIELDS: values}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, message[, exc, stack],
    and the record's `fields` (see `fields`) as keys of their own, never overriding those."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, object] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        data = getattr(record, FIELDS, None)
        if isinstance(data, dict):
            for key, value in data.items():
                doc.setdefault(str(key), value)
        return json.dumps(doc, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler `setup_logging` installs (so a second call can find and replace it)."""


def make_handler(fmt: LogFormat = "human", stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with the format and the redaction filter."""
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    handler.addFilter(RedactingFilter())
    return handler


def setup_logging(level: int, fmt: LogFormat = "human") -> None:
    """Log to stderr at `level` in `fmt`; the human format is `HUMAN_FORMAT`.

    Like `logging.basicConfig`, it leaves a root logger that already has handlers it did
    not install alone (an embedding application, pytest's capture), apart from the level;
    calling it again replaces the handler it installed before.
    """
    if fmt not in ("human", "json"):
        raise ValueError(f"unknown log format {fmt!r}; expected human or json")
    root = logging.getLogger()
    root.setLevel(level)
    ours = [h for h in root.handlers if isinstance(h, _Handler)]
    if len(ours) != len(root.handlers):
        return
    for handler in ours:
        root.removeHandler(handler)
        handler.close()
    root.addHandler(make_handler(fmt))
