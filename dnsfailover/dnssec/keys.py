"""DNSSEC signing keys in BIND's file format (`Kzone.+013+12345.key` / `.private`).

Keys are generated on first need into a zone's directory beside the state file
(`<state>.keys/<zone>/`, mode 0700, files 0600), where `dnssec-verify`, `dnssec-signzone`
and BIND read them as they read `dnssec-keygen` output; or loaded from such files
(`key_files:`).  A private key is never in a log line, an error message or a repr: errors
name the file and what is wrong with it, nothing read from it.

Each key carries its timing metadata (`Timing`: Publish, Activate, Inactive, Delete,
SyncPublish, SyncDelete), read from and written to the files as `dnssec-keygen -P/-A/-I/-D`
and `dnssec-settime` do: `YYYYMMDDHHMMSS` (UTC) fields in the `.private` file, which BIND
reads, and `; Publish: ...` comments in the `.key` file.  What the times mean for signing
is `rollover.state`'s.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import fcntl
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dnsfailover.dnssec.timing import TIME_NAMES, Timing, from_fields
from dnsfailover.errors import DnsFailoverError

#: the algorithms we sign with: number → BIND's mnemonic
ALGORITHMS = {13: "ECDSAP256SHA256", 15: "ED25519"}
ZSK_FLAGS = 256  # ZONE
KSK_FLAGS = 257  # ZONE | SEP
KeyMode = Literal["csk", "ksk+zsk"]
Role = Literal["csk", "ksk", "zsk"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_P256_BYTES = 32


class KeyFileError(DnsFailoverError):
    """A DNSSEC key file cannot be used (the message names the file, never its secret)."""


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """One zone key: its DNSKEY, its private half (never shown) and where it is kept."""

    zone: dns.name.Name
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY
    role: Role
    private: PrivateKey = field(compare=False)
    path: Path | None = None  # the file stem: `path.with_suffix(".key")` ... see `files`
    timing: Timing = field(default=Timing(), compare=False)  # as in the files
    # computed once: the signer needs both for every signature
    tag: int = field(init=False, compare=False)
    signer: bytes = field(init=False, compare=False)  # the zone name, canonical wire form

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag", dns.dnssec.key_id(self.dnskey))
        object.__setattr__(self, "signer", self.zone.to_digestable())

    @property
    def algorithm(self) -> int:
        return int(self.dnskey.algorithm)

    @property
    def flags(self) -> int:
        return int(self.dnskey.flags)

    @property
    def files(self) -> tuple[Path, Path] | None:
        """The `.key` and `.private` files, when the key came from (or went to) files."""
        if self.path is None:
            return None
        return Path(f"{self.path}.key"), Path(f"{self.path}.private")

    def with_role(self, role: Role) -> SigningKey:
        return dataclasses.replace(self, role=role)

    def with_timing(self, timing: Timing) -> SigningKey:
        return dataclasses.replace(self, timing=timing)

    def ds(self, digest: str = "SHA256") -> dns.rdtypes.ANY.DS.DS:
        """The DS record the parent publishes for this key (digest 2, SHA-256, by default)."""
        return dns.dnssec.make_ds(self.zone, self.dnskey, digest)

    def __repr__(self) -> str:  # no private material, ever
        name = ALGORITHMS.get(self.algorithm, str(self.algorithm))
        return f"SigningKey({self.zone} {self.role} tag={self.tag} {name})"


@dataclass(frozen=True, slots=True)
class KeySet:
    """A zone's keys: `ksks` sign the DNSKEY RRset, `zsks` every other RRset (a CSK is in
    both); `generated` lists the files made by this call (empty when all were there)."""

    zone: dns.name.Name
    keys: tuple[SigningKey, ...]
    generated: tuple[Path, ...] = ()

    @property
    def ksks(self) -> tuple[SigningKey, ...]:
        return tuple(k for k in self.keys if k.role in ("csk", "ksk"))

    @property
    def zsks(self) -> tuple[SigningKey, ...]:
        return tuple(k for k in self.keys if k.role in ("csk", "zsk"))


# -- generating and writing -------------------------------------------------------------------


def generate(zone: str | dns.name.Name, algorithm: int, flags: int, role: Role) -> SigningKey:
    """A new key pair, in memory (`write` keeps it)."""
    private: PrivateKey
    if algorithm == 13:
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == 15:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise KeyFileError(f"algorithm {algorithm} is not supported (13 or 15)")
    dnskey = dns.dnssec.make_dnskey(private.public_key(), algorithm, flags)
    return SigningKey(_name(zone), dnskey, role, private)


def stem(zone: dns.name.Name, algorithm: int, tag: int) -> str:
    """BIND's file name without suffix: `Kexample.test.+013+12345`."""
    return f"K{zone.to_text()}+{algorithm:03d}+{tag:05d}"


def write(key: SigningKey, directory: Path, now: float | None = None) -> SigningKey:
    """Write `key` as BIND's `.key` and `.private` pair (mode 0600) into `directory`, with
    its `timing` (rewriting the pair of a key already there is `dnssec-settime`); the same
    key, with its `path` and the times written.  A key without Created is created `now`;
    one without Publish and Activate is published and active from its creation, as
    `dnssec-keygen` makes it."""
    timing = key.timing
    if timing.created is None:
        timing = timing.replace(created=float(int(time.time() if now is None else now)))
    if timing.publish is None and timing.activate is None:
        timing = timing.replace(publish=timing.created, activate=timing.created)
    base = directory / stem(key.zone, key.algorithm, key.tag)
    kind = "key-signing" if key.flags & 1 else "zone-signing"
    public = (
        f"; This is a {kind} key, keyid {key.tag}, for {key.zone}\n"
        + timing.key_comments()
        + f"{key.zone} IN DNSKEY {key.dnskey.to_text()}\n"
    )
    secret = (
        "Private-key-format: v1.3\n"
        f"Algorithm: {key.algorithm} ({ALGORITHMS[key.algorithm]})\n"
        f"PrivateKey: {base64.b64encode(_raw_private(key.private)).decode()}\n"
        + timing.private_fields()
    )
    _write_private(Path(f"{base}.private"), secret)
    _write_private(Path(f"{base}.key"), public)
    return dataclasses.replace(key, path=base, timing=timing.whole_seconds())


def settime(key: SigningKey, timing: Timing) -> SigningKey:
    """`dnssec-settime`: rewrite `key`'s files with `timing` (its Created kept when
    `timing` has none); the key with its new times.

    :raises KeyFileError: the key has no files.
    """
    if key.path is None:
        raise KeyFileError(f"{key!r} has no files to set times in")
    if timing.created is None:
        timing = timing.replace(created=key.timing.created)
    return write(key.with_timing(timing), key.path.parent)


def _raw_private(private: PrivateKey) -> bytes:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.private_numbers().private_value.to_bytes(_P256_BYTES, "big")
    from cryptography.hazmat.primitives import serialization

    return private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# -- reading ----------------------------------------------------------------------------------


def pair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The `.key` and `.private` files of a key given as either file or their stem."""
    text = os.fspath(path)
    for suffix in (".key", ".private"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return Path(f"{text}.key"), Path(f"{text}.private")


def check_mode(path: Path) -> None:
    """A private key readable by its group or by others is refused.

    :raises KeyFileError: naming the file and its mode.
    """
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror or e}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"{path} is readable by its group or others (mode {mode:04o}): chmod 600 {path}"
        )


def read(path: str | os.PathLike[str], role: Role | None = None) -> SigningKey:
    """The key of a BIND `.key`/`.private` pair (`path`: either file, or their stem); its
    role is `role`, else its flags' (257: ksk, 256: zsk).

    :raises KeyFileError: a file missing or unreadable, a private key readable by others,
        a malformed file, an unsupported algorithm, or halves that do not match.
    """
    public_path, private_path = pair(path)
    name, dnskey, comments = _read_public(public_path)
    check_mode(private_path)
    try:
        text = private_path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not ASCII text"
        raise KeyFileError(f"cannot read {private_path}: {why or e}") from None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    algorithm = fields.get("algorithm", "").split(" ")[0]
    if not algorithm.isdigit() or "privatekey" not in fields:
        raise KeyFileError(f"{private_path}: not a BIND private key file (Algorithm, PrivateKey)")
    if int(algorithm) != dnskey.algorithm:
        raise KeyFileError(
            f"{private_path}: algorithm {algorithm} differs from {public_path}'s "
            f"{int(dnskey.algorithm)}"
        )
    private = _private(int(algorithm), fields["privatekey"], private_path)
    derived = dns.dnssec.make_dnskey(private.public_key(), int(algorithm), dnskey.flags)
    if derived.key != dnskey.key:
        raise KeyFileError(f"{private_path} is not the private half of {public_path}")
    found: Role = role or ("ksk" if dnskey.flags & 1 else "zsk")
    # BIND reads the times from the .private file; the .key's comments are a fallback
    timing = _timing({**comments, **fields}, private_path)
    return SigningKey(name, dnskey, found, private, public_path.with_suffix(""), timing)


def _timing(fields: dict[str, str], path: Path) -> Timing:
    try:
        return from_fields(fields)
    except ValueError as e:
        raise KeyFileError(
            f"{path}: {e} is not a time as BIND writes it (YYYYMMDDHHMMSS)"
        ) from None


def _read_public(
    path: Path,
) -> tuple[dns.name.Name, dns.rdtypes.ANY.DNSKEY.DNSKEY, dict[str, str]]:
    """The name and DNSKEY of a `.key` file, and its `; Publish: ...` comments."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not ASCII text"
        raise KeyFileError(f"cannot read {path}: {why or e}") from None
    comments: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(";"):
            key, sep, value = line[1:].partition(":")
            if sep and key.strip().lower() in TIME_NAMES:
                comments[key.strip().lower()] = value.strip()
            continue
        words = line.split(";")[0].split()
        if "DNSKEY" not in (w.upper() for w in words):
            continue
        at = [w.upper() for w in words].index("DNSKEY")
        try:
            name = dns.name.from_text(words[0])
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.DNSKEY, " ".join(words[at + 1 :])
            )
        except dns.exception.DNSException as e:
            raise KeyFileError(f"{path}: not a DNSKEY record: {e}") from None
        assert isinstance(rdata, dns.rdtypes.ANY.DNSKEY.DNSKEY)
        if int(rdata.algorithm) not in ALGORITHMS:
            raise KeyFileError(
                f"{path}: algorithm {int(rdata.algorithm)} is not supported (13 or 15)"
            )
        return name, rdata, comments
    raise KeyFileError(f"{path}: no DNSKEY record (is it a dnssec-keygen .key file?)")


def _private(algorithm: int, encoded: str, path: Path) -> PrivateKey:
    try:
        raw = base64.b64decode(encoded, validate=True)
        if algorithm == 13 and len(raw) == _P256_BYTES:
            return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        if algorithm == 15 and len(raw) == _P256_BYTES:
            return ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    except (binascii.Error, ValueError):
        pass
    raise KeyFileError(f"{path}: its PrivateKey is not a valid algorithm {algorithm} key")


# -- a zone's key set -------------------------------------------------------------------------


def load(
    paths: Sequence[str | os.PathLike[str]], zone: str, algorithm: int, mode: KeyMode
) -> KeySet:
    """The key set of `zone` from BIND key files.

    :raises KeyFileError: a file is wrong (see `read`), a key is for another zone or of
        another algorithm, or the set misses a role (`ksk+zsk` needs both flags).
    """
    origin = _name(zone)
    found = []
    for path in paths:
        key = read(path)
        if key.zone != origin:
            raise KeyFileError(f"{pair(path)[0]}: a key for {key.zone}, not {origin}")
        if key.algorithm != algorithm:
            raise KeyFileError(
                f"{pair(path)[0]}: algorithm {key.algorithm} ({ALGORITHMS[key.algorithm]}), "
                f"not the zone's {algorithm} ({ALGORITHMS.get(algorithm, '?')})"
            )
        found.append(key)
    return KeySet(origin, _roles(found, mode, origin))


def _roles(keys: list[SigningKey], mode: KeyMode, origin: dns.name.Name) -> tuple[SigningKey, ...]:
    if mode == "csk":
        if not keys:
            raise KeyFileError(f"{origin}: no key")
        return tuple(k.with_role("csk") for k in keys)
    roles = {k.role for k in keys}
    if roles != {"ksk", "zsk"}:
        raise KeyFileError(
            f"{origin}: keys: ksk+zsk needs a KSK (flags 257: dnssec-keygen -f KSK) and a "
            f"ZSK (flags 256); found {', '.join(sorted(roles)) or 'none'}"
        )
    return tuple(keys)


def keys_directory(state: str | os.PathLike[str], zone: str) -> Path:
    """Where `zone`'s generated keys live: `<state>.keys/<zone without its dot>/`."""
    label = _name(zone).to_text(omit_final_dot=True)
    if "/" in label or label.startswith("."):
        label = label.replace("/", "%2F").lstrip(".")
    return Path(f"{os.fspath(state)}.keys") / (label or "root")


def ensure(
    directory: Path,
    zone: str,
    algorithm: int,
    mode: KeyMode,
    now: float | None = None,
    lead: float = 0.0,
) -> KeySet:
    """`zone`'s keys in `directory`, generating (and writing) those missing; a lock keeps
    two processes (a node and `dnssec ds`) from both generating.  A key is made for a role
    only when the directory has none with that role's flags (whatever their times).  One
    made beside keys already there (a `csk` zone turned `ksk+zsk`) is published now and
    signs `lead` seconds later (the DNSKEY TTL + the propagation delay: once every cache
    has its DNSKEY); the keys there sign until then (`rollover.state`).

    :raises KeyFileError: a key file there is wrong, or there are keys of another
        algorithm only (an algorithm rollover is never done behind the operator's back).
    """
    prepare(directory)
    with locked(directory):
        return ensure_locked(directory, zone, algorithm, mode, now, lead)


def prepare(directory: Path) -> None:
    """Make a key directory and its parent (mode 0700) if missing.

    :raises KeyFileError: either is open to its group or others.
    """
    _private_dir(directory.parent)
    _private_dir(directory)


def scan(directory: Path, zone: str | dns.name.Name) -> list[SigningKey]:
    """Every key of `zone` in `directory` (any algorithm), by file name."""
    origin = _name(zone)
    return [read(p) for p in sorted(directory.glob(f"K{origin.to_text()}+*.key"))]


def ensure_locked(
    directory: Path,
    zone: str,
    algorithm: int,
    mode: KeyMode,
    now: float | None = None,
    lead: float = 0.0,
) -> KeySet:
    """`ensure`, for a caller that holds `locked(directory)` already."""
    origin = _name(zone)
    found = scan(directory, origin)
    ours = [k for k in found if k.algorithm == algorithm]
    if found and not ours:
        other = ", ".join(sorted({str(k.algorithm) for k in found}))
        raise KeyFileError(
            f"{directory} holds keys of algorithm {other}, not {algorithm}: an algorithm "
            "rollover is not automatic; move them away once the parent's DS is changed"
        )
    wanted: list[tuple[Role, int]] = (
        [("csk", KSK_FLAGS)] if mode == "csk" else [("ksk", KSK_FLAGS), ("zsk", ZSK_FLAGS)]
    )
    keys: list[SigningKey] = []
    made: list[Path] = []
    for role, flags in wanted:
        have = [k for k in ours if k.flags == flags]
        if have:
            keys += [k.with_role(role) for k in have]
            continue
        key = fresh(origin, algorithm, flags, role, found + keys)
        if ours and lead > 0:
            start = float(int(time.time() if now is None else now))
            key = key.with_timing(Timing(publish=start, activate=float(math.ceil(start + lead))))
        key = write(key, directory, now)
        keys.append(key)
        made += list(key.files or ())
    return KeySet(origin, tuple(keys), tuple(made))


def fresh(
    origin: dns.name.Name, algorithm: int, flags: int, role: Role, beside: Sequence[SigningKey]
) -> SigningKey:
    """A new key whose tag none of `beside` has (a tag is 16 bits: two keys of a zone must
    not share one)."""
    taken = {k.tag for k in beside}
    while True:
        key = generate(origin, algorithm, flags, role)
        if key.tag not in taken:
            return key


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(
            f"{path} is open to its group or others (mode {mode:04o}): chmod 700 {path}"
        )


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold `directory`'s key lock: one process at a time generates or changes keys there."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _name(zone: str | dns.name.Name) -> dns.name.Name:
    return zone if isinstance(zone, dns.name.Name) else dns.name.from_text(zone)
