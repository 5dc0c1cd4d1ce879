"""One root exception; each subclass's docstring is its message when none is given.

Everything dnsfailover raises on purpose is a `DnsFailoverError`.  What a user got wrong (a
request naming what does not exist, a what-if about an unknown tier, a reload that needs a
restart) is a `UserError`, so an API can answer it with a 4xx and anything else, a bug
included, with a 500 and a logged traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class DnsFailoverError(Exception):
    """dnsfailover failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file, located as precisely as we can."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class UserError(DnsFailoverError):
    """The request is wrong: it names what does not exist or is not allowed."""


class NotReady(DnsFailoverError):
    """The node is starting: what was asked is not available yet."""


class ConfigError(DnsFailoverError):
    """The configuration is invalid."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems) or None)


class StoreError(DnsFailoverError):
    """The state store cannot be used."""
