"""Where a client is: a MaxMind-format database plus an explicit CIDR map that wins over it.

The database is any MMDB file `maxminddb` reads (GeoLite2 / GeoIP2 / DB-IP, country or city),
opened with MODE_AUTO (the C extension over mmap when installed) so a lookup costs about a
microsecond.  Records are read in the MaxMind
layout (`country.iso_code`, `continent.code`, `location.latitude/longitude`) or the flat
layout of the ip-location-db packages (`country_code`, `latitude`, `longitude`; no
continent).

A lookup returns a :class:`Location`: country, continent, coordinates, the map label when a
CIDR of the map matched (then the database is not consulted: the map wins, as gdnsd's
`nets` do), and `prefix`, the leading bits of the address the location depends on: the
database network's length or the matched CIDR's, made longer where a more specific map
entry splits that network (see `nets.py`).  It becomes the ECS SCOPE of a steered answer.
It is given in the family of the address asked: an IPv4-mapped (::ffff:a.b.c.d) or
IPv4-compatible (::a.b.c.d, where IPv6 databases keep their IPv4 data) IPv6 address is
looked up as the IPv4 address it holds, map included, and its prefix has 96 added (gdnsd
does the same).

`reload_if_changed` reopens the file when its identity (device, inode, size, mtime) changed
and keeps the old database when the new file does not open.  The mapped file is a private
copy, so a database rewritten in place instead of renamed into place cannot crash the
server (SIGBUS) before the reload notices.  A Locator is meant for one thread (the
server's event loop): a reload closes the old reader.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import maxminddb
from maxminddb import InvalidDatabaseError

from dnsfailover.geo.errors import DatabaseError
from dnsfailover.geo.nets import NetMap

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
_NETWORKS = (IPv4Network, IPv6Network)
_MAPPED = (maxminddb.MODE_AUTO, maxminddb.MODE_MMAP, maxminddb.MODE_MMAP_EXT)
_IPV4_IN_IPV6 = (0, 0xFFFF)  # the leading 96 bits of ::a.b.c.d and ::ffff:a.b.c.d
COORDINATES_SAMPLE = 1000  # records read to tell a city database from a country one


class Location(NamedTuple):
    """Where one client (address or ECS network) is, as far as steering can tell.

    Immutable; a named tuple rather than a frozen dataclass because one is made per query
    (it is built in a third of the time).
    """

    prefix: int  # leading bits of the address this location depends on (the ECS scope)
    country: str | None = None  # ISO 3166-1 alpha-2
    continent: str | None = None  # AF AN AS EU NA OC SA
    coordinates: tuple[float, float] | None = None  # (latitude, longitude) in degrees
    net: str | None = None  # the CIDR map's label, when a map entry matched


@dataclass(frozen=True, slots=True)
class Reload:
    """What `reload_if_changed` did: `reloaded` a new file, or kept the old one because of
    `error` (None when the file had not changed)."""

    reloaded: bool
    error: str | None = None


def _identity(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _field(record: dict[str, Any], outer: str, inner: str, flat: str) -> Any:
    value = record.get(outer)
    if isinstance(value, dict):
        return value.get(inner)
    return record.get(flat)


def _coordinates(record: dict[str, Any]) -> tuple[float, float] | None:
    where = record.get("location")
    source = where if isinstance(where, dict) else record
    lat, lon = source.get("latitude"), source.get("longitude")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        return (float(lat), float(lon))
    return None


def location_of(record: Any, prefix: int) -> Location:
    """The location a database record says, for a network of `prefix` bits."""
    if not isinstance(record, dict):
        return Location(prefix)
    country = _field(record, "country", "iso_code", "country_code")
    continent = _field(record, "continent", "code", "continent_code")
    return Location(
        prefix,
        country if isinstance(country, str) else None,
        continent if isinstance(continent, str) else None,
        _coordinates(record),
    )


class _Opened(NamedTuple):
    reader: maxminddb.Reader
    data: mmap.mmap  # the same file's bytes, for compiling tables from its search tree


def _open(path: Path, mode: int, need_coordinates: bool, private: bool) -> _Opened:
    copy: Path | None = None
    try:
        if private and mode in _MAPPED:
            copy = _private_copy(path)
        source = str(copy or path)
        reader = maxminddb.open_database(source, mode)
        try:
            with open(source, "rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            reader.close()
            raise
    except (OSError, ValueError, InvalidDatabaseError) as e:
        why = str(e).replace(str(copy), str(path)) if copy is not None else str(e)
        raise DatabaseError(f"{path}: cannot open it as a MaxMind-format database: {why}") from e
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)  # the mapping keeps the data; nobody can touch it
    if need_coordinates and not _has_coordinates(reader):
        kind = reader.metadata().database_type
        reader.close()
        data.close()
        raise DatabaseError(
            f"{path}: the database ({kind}) has no coordinates in its first "
            f"{COORDINATES_SAMPLE} records; proximity steering needs a city database"
        )
    return _Opened(reader, data)


def _private_copy(path: Path) -> Path:
    """A copy of `path` only this process knows (unlinked once mapped).

    A reader maps the file: were the file truncated or rewritten in place (`cp new.mmdb
    GeoLite2-City.mmdb`, `curl -o`), the next lookup would read past its end and the kernel
    would kill the whole server with SIGBUS.  geoipupdate renames a new file into place, but
    not every tool does; copying costs the file's size in TMPDIR, once per (re)load.
    """
    fd, name = tempfile.mkstemp(prefix="dnsfailover-geo-", suffix=".mmdb")
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _has_coordinates(reader: maxminddb.Reader) -> bool:
    try:
        for n, (_network, record) in enumerate(reader):
            if isinstance(record, dict) and _coordinates(record) is not None:
                return True
            if n + 1 >= COORDINATES_SAMPLE:
                break
    except (ValueError, InvalidDatabaseError):
        return False
    return False


class Locator:
    """Locates clients in a database (optional) and a CIDR map (optional, wins).

    :param database: path of an MMDB file, or None to use the map alone.
    :param nets: the CIDR map.
    :param need_coordinates: refuse a database without coordinates (proximity steering).
    :param mode: a `maxminddb` open mode: MODE_AUTO (default) or MODE_MMAP, MODE_MEMORY...
    :param private_copy: map a private copy of the file, not the file itself (the default),
        so a file rewritten in place cannot crash the process (see `_private_copy`).
    :raises DatabaseError: naming the file and why, when the database does not open or has
        no coordinates that are needed.
    """

    def __init__(
        self,
        database: str | os.PathLike[str] | None = None,
        nets: NetMap | None = None,
        *,
        need_coordinates: bool = False,
        mode: int = maxminddb.MODE_AUTO,
        private_copy: bool = True,
    ) -> None:
        self.path = Path(database) if database is not None else None
        self.nets = nets if nets is not None else NetMap()
        self._need_coordinates = need_coordinates
        self._mode = mode
        self._private = private_copy
        self._reader: maxminddb.Reader | None = None
        self._data: mmap.mmap | None = None
        self._identity: tuple[int, int, int, int] | None = None
        if self.path is not None:
            try:
                identity = _identity(self.path)
            except OSError as e:
                raise DatabaseError(f"{self.path}: cannot read the database: {e}") from e
            self._reader, self._data = _open(self.path, mode, need_coordinates, private_copy)
            self._identity = identity

    @property
    def reader(self) -> maxminddb.Reader | None:
        """The open database (None without one): compiled placement iterates it."""
        return self._reader

    @property
    def data(self) -> mmap.mmap | None:
        """The open database file's bytes (None without one): compiled placement walks its
        search tree, as the reader does."""
        return self._data

    @property
    def identity(self) -> tuple[int, int, int, int] | None:
        """The open file's (device, inode, size, mtime); None without a database."""
        return self._identity

    def reopened(self) -> Locator | None:
        """A new Locator over the file when it changed since this one opened it, else None.

        Unlike `reload_if_changed`, this one is left untouched, so whatever was compiled
        from it (a :class:`~dnsfailover.geo.steering.Steering`) stays valid and in use until
        the caller swaps in what it builds from the new one.

        :raises DatabaseError: naming the file and why, when the new file does not open.
        """
        if self.path is None:
            return None
        try:
            identity = _identity(self.path)
        except OSError as e:
            raise DatabaseError(f"{self.path}: cannot read the database: {e}") from e
        if identity == self._identity:
            return None
        return Locator(
            self.path,
            self.nets,
            need_coordinates=self._need_coordinates,
            mode=self._mode,
            private_copy=self._private,
        )

    @property
    def database_type(self) -> str | None:
        """The open database's type from its metadata (e.g. GeoLite2-City)."""
        return self._reader.metadata().database_type if self._reader is not None else None

    def locate(self, client: Address | Network) -> Location:
        """Where `client` is: an address, or an ECS network (located by its first address;
        truncate it to the source limit first)."""
        address = client.network_address if isinstance(client, _NETWORKS) else client
        if address.version == 6:
            value = int(address)
            if value >> 32 in _IPV4_IN_IPV6:
                found = self._locate(IPv4Address(value & 0xFFFFFFFF))
                return Location(
                    found.prefix + 96, found.country, found.continent, found.coordinates, found.net
                )
        return self._locate(address)

    def _locate(self, address: Address) -> Location:
        length, label, split = self.nets.find(address)
        if label is not None:
            return Location(max(length, split), net=label)
        reader = self._reader
        if reader is None:
            return Location(split)
        try:
            record, base = reader.get_with_prefix_len(address)
        except ValueError:
            # an IPv6 address in an IPv4-only database: it knows nothing of any IPv6 address
            return Location(split)
        return location_of(record, max(base, split))

    def reload_if_changed(self) -> Reload:
        """Reopen the database when the file changed; keep the old one if the new one does
        not open (the error says why)."""
        if self.path is None:
            return Reload(False)
        try:
            identity = _identity(self.path)
        except OSError as e:
            return Reload(False, f"{self.path}: cannot read the database: {e}")
        if identity == self._identity:
            return Reload(False)
        try:
            reader, data = _open(self.path, self._mode, self._need_coordinates, self._private)
        except DatabaseError as e:
            return Reload(False, str(e))
        old, self._reader, self._identity = self._reader, reader, identity
        old_data, self._data = self._data, data
        if old is not None:
            old.close()
        if old_data is not None:
            old_data.close()
        return Reload(True)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._data is not None:
            self._data.close()
            self._data = None

    def __enter__(self) -> Locator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
