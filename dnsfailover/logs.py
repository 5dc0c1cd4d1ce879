"""Logging setup: human lines by default, one JSON object per line for machines.

Both formats pass through `RedactingFilter`, a last line of defence: the code never logs
secret values on purpose, but an exception from a library can carry a header, a URL with
credentials or a `password=` setting, and logs are shipped to places secrets must not go.
"""

from __future__ import annotations

import json
import logging
import re
import sys
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


def redact(text: str) -> str:
    """`text` with anything that looks like a credential replaced by `***`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, message[, exc, stack]."""

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
        return json.dumps(doc, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler `setup_logging` installs (so a second call can find and replace it)."""


def make_handler(fmt: LogFormat = "human", stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with the format and the redaction filter."""
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(HUMAN_FORMAT))
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
