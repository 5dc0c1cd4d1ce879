"""Serial floors: the one state write a publish waits for, kept where a full disk cannot stop it.

The floors (for each zone, a serial at least as high as any served) live in a small file
beside the state file (`STATE-serials`), allocated once and rewritten in place: two slots,
each with a sequence number and a CRC, written alternately and fsynced, so a crash mid-write
leaves the other slot whole.  Rewriting allocated blocks needs no new space on ext4, XFS or
tmpfs (a copy-on-write file system such as btrfs or ZFS may still need some), so failover
goes on when the disk is full; only a config with more zones than the file has room for
grows it.  Losing the file (with the state file) is covered by the serial bound
(`store.MAX_AHEAD`).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

from dnsfailover.errors import StoreError

MAGIC = b"DFSF"
HEADER = struct.Struct("<4sQII")  # magic, sequence, payload length, crc32
MIN_SLOT = 4096


class SerialFloors:
    """The floors file at `path` (None: kept in memory only, for a `:memory:` store)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._seq = 0
        self._slot = MIN_SLOT
        self._memory: dict[str, int] = {}

    def load(self) -> dict[str, int]:
        """The newest whole slot's floors ({} without a file or a whole slot)."""
        if self.path is None:
            return dict(self._memory)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise StoreError(f"cannot read serial floors {self.path}: {e}") from e
        self._slot = max(MIN_SLOT, len(data) // 2)
        best: tuple[int, dict[str, int]] = (0, {})
        for start in (0, self._slot):
            slot = data[start : start + self._slot]
            if len(slot) < HEADER.size:
                continue
            magic, seq, length, crc = HEADER.unpack_from(slot)
            payload = slot[HEADER.size : HEADER.size + length]
            if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
                continue
            try:
                floors = {str(k): int(v) for k, v in json.loads(payload).items()}
            except (ValueError, TypeError, AttributeError):
                continue
            if seq > best[0]:
                best = (seq, floors)
        self._seq = best[0]
        return best[1]

    def save(self, floors: dict[str, int]) -> None:
        """Write `floors` into the older slot and fsync.

        :raises StoreError: the file cannot be written (it grows only for more zones).
        """
        if self.path is None:
            self._memory = dict(floors)
            return
        payload = json.dumps(floors, sort_keys=True, separators=(",", ":")).encode()
        record = HEADER.pack(MAGIC, self._seq + 1, len(payload), zlib.crc32(payload)) + payload
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if len(record) > self._slot or size < 2 * self._slot:
                    self._grow(fd, len(record), size)
                start = self._slot * ((self._seq + 1) % 2)
                os.pwrite(fd, record, start)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise StoreError(f"cannot write serial floors {self.path}: {e}") from e
        self._seq += 1

    def _grow(self, fd: int, needed: int, size: int) -> None:
        """Make room for two slots of at least twice `needed` bytes; the old slots' content is
        rewritten by the next saves (the current one first)."""
        slot = self._slot
        while slot < 2 * needed:
            slot *= 2
        if slot != self._slot or size < 2 * slot:
            current = b""
            if size >= 2 * self._slot and self._seq:
                current = os.pread(fd, self._slot, self._slot * (self._seq % 2))
            os.posix_fallocate(fd, 0, 2 * slot)
            self._slot = slot
            if current:
                os.pwrite(fd, current, self._slot * (self._seq % 2))
