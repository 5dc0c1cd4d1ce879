"""Reading the files a config names, bounded: the config itself, zone files, secrets.

A path may name anything: `/dev/zero` or `/dev/urandom` never end, a FIFO blocks until some
writer comes, a 50 MB file takes longer to parse than a reload may.  So only regular files
are read, and at most `limit` bytes of them; anything else is refused with a message that
says why (and names the limit), never read "until it ends".
"""

from __future__ import annotations

import os
import stat

MiB = 1024 * 1024
MAX_CONFIG_BYTES = 32 * MiB
MAX_ZONE_FILE_BYTES = 64 * MiB  # ~1.5 million records
MAX_SECRET_BYTES = 64 * 1024


class UnreadableFile(OSError):
    """The file cannot be read; `str()` is the reason alone (no errno, no path)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB else f"{limit // 1024} KiB"


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at `path`, if it holds at most `limit` of them.

    :raises UnreadableFile: missing, unreadable, not a regular file, or larger than `limit`
        (the message says which, and names the limit).
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UnreadableFile(e.errno, e.strerror or str(e)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _kind(info.st_mode)
            raise UnreadableFile(f"not a regular file ({kind}); only regular files are read")
        if info.st_size > limit:
            raise UnreadableFile(_too_big(info.st_size, limit))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow while it is read: never past the limit
            chunk = os.read(fd, min(limit + 1 - size, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnreadableFile(_too_big(size, limit))
        return b"".join(chunks)
    except UnreadableFile:
        raise
    except OSError as e:
        raise UnreadableFile(e.errno, e.strerror or str(e)) from None
    finally:
        os.close(fd)


def read_text_bounded(path: str | os.PathLike[str], limit: int) -> str:
    """`read_bounded` decoded as UTF-8 (a BOM is dropped).

    :raises UnreadableFile: as `read_bounded`, or when the bytes are not UTF-8 text.
    """
    raw = read_bounded(path, limit)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UnreadableFile(f"not valid UTF-8 text (line {line})") from None


def _too_big(size: int, limit: int) -> str:
    return f"larger than the {_size(limit)} limit ({size:,} bytes or more)"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
