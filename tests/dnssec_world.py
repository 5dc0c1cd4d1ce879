"""A DNS world for checking our signed answers with real validators (issue 17).

- `delv()` runs BIND's `delv` against one server with a local trust anchor and reads what it
  concluded ("fully validated", "negative response, fully validated", "unsigned answer", or
  the failure).
- `NetNs` is a private network namespace (`unshare --net`): inside it, servers listen on
  127.0.0.x port 53 as a delegation needs (an NS record cannot carry a port), and nothing can
  leave it, not even to the host's loopback.  Commands enter it with `nsenter`; Python code
  (listeners, dnspython queries) runs in a thread that joined it (`setns`).
- `Named` is BIND 9 `named` in the foreground; `keygen`, `signzone` and `dsfromkey` are
  BIND's tools; together they make the local root, the signed parent and the validating
  resolver of `tests/e2e/test_dnssec_validate.py`.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import IO, Any, TypeVar

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from dnssec_support import tool
from support import BIN

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Delv:
    """What `delv` printed for one query."""

    out: str

    @property
    def verdict(self) -> str:
        """delv's conclusion: the comment line naming the validation result, e.g.
        "fully validated", "negative response, fully validated", "unsigned answer", or
        "resolution failed: ..." when it has none."""
        for line in self.out.splitlines():
            if line.startswith("; ") and line[2:].split(",")[0] in _RESULTS:
                return line[2:]
        failed = re.search(r"^;; (resolution failed: .*)$", self.out, re.M)
        return failed.group(1) if failed else f"no verdict in: {self.out!r}"

    def values(self, rtype: str) -> tuple[str, ...]:
        """The rdata of the answer's records of `rtype` (not the RRSIGs), sorted."""
        found = []
        for line in self.out.splitlines():
            fields = line.split(None, 4)
            if not line.startswith(";") and len(fields) == 5 and fields[3] == rtype:
                found.append(fields[4])
        return tuple(sorted(found))

    def signed_by(self) -> tuple[int, ...]:
        """The key tags of the answer's RRSIGs."""
        tags = []
        for line in self.out.splitlines():
            fields = line.split()
            if not line.startswith(";") and len(fields) > 10 and fields[3] == "RRSIG":
                tags.append(int(fields[10]))
        return tuple(sorted(tags))


_RESULTS = {
    "fully validated",
    "negative response",
    "unsigned answer",
    "validation failed",
    "answer not validated",
}


def anchor_file(path: Path, zone: str, dnskey: str) -> Path:
    """A delv/named `trust-anchors` file with one static key (`dnskey`: flags protocol
    algorithm base64, as in a .key file)."""
    flags, protocol, algorithm, key = dnskey.split(None, 3)
    key = "".join(key.split())
    path.write_text(
        f'trust-anchors {{ {zone} static-key {flags} {protocol} {algorithm} "{key}"; }};\n'
    )
    return path


def dnskey_of(key_file: Path) -> str:
    """The DNSKEY rdata (flags protocol algorithm key) of a BIND .key file."""
    for line in key_file.read_text().splitlines():
        if not line.startswith(";") and " DNSKEY " in line:
            return line.split(" DNSKEY ", 1)[1].strip()
    raise AssertionError(f"no DNSKEY in {key_file}")


def delv(
    server: str,
    port: int,
    anchors: Path,
    root: str,
    name: str,
    rtype: str = "A",
    netns: NetNs | None = None,
) -> Delv:
    """`delv @server -p port -a anchors +root=root name rtype` (in `netns` when given)."""
    cmd = [
        tool("delv"),
        f"@{server}",
        "-p",
        str(port),
        "-a",
        str(anchors),
        f"+root={root}",
        name,
        rtype,
    ]
    run = netns.run if netns else _run
    done = run(cmd)
    return Delv(done.stdout + done.stderr)


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


class NetNs:
    """A private network namespace with only its loopback, up; kept alive by a `sleep`."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen([tool("unshare"), "--net", "--", "sleep", "infinity"])
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self._addresses = {"127.0.0.1"}
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while _readlink(self.path) in (None, ours):
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"unshare --net failed (exit {self.holder.poll()})")
            time.sleep(0.01)
        done = self.run([tool("ip"), "link", "set", "lo", "up"])
        assert done.returncode == 0, done.stderr

    def add_address(self, address: str) -> None:
        """Put `address` on the loopback (named listens only on an interface's addresses;
        the kernel answers for all of 127/8 anyway)."""
        if address not in self._addresses:
            done = self.run([tool("ip"), "address", "add", f"{address}/32", "dev", "lo"])
            assert done.returncode == 0, done.stderr
            self._addresses.add(address)

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return [tool("nsenter"), f"--net={self.path}", "--", *cmd]

    def run(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(cmd))

    def popen(self, cmd: Sequence[str], stdout: IO[Any] | int, stderr: IO[Any] | int) -> Popen[str]:
        return subprocess.Popen(self.argv(cmd), stdout=stdout, stderr=stderr, text=True)

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` in a thread that joined the namespace: the sockets it makes are in there
        (and stay there wherever they are used later)."""
        result: list[T] = []
        error: list[BaseException] = []

        def inside() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                result.append(fn())
            except BaseException as e:  # re-raised in the caller
                error.append(e)

        thread = threading.Thread(target=inside)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    def query(self, name: str, rtype: str, server: str, *, cd: bool = False) -> dns.message.Message:
        """A recursive dnspython query to `server`:53 inside the namespace, with DO and a
        1232-byte buffer (TCP when the answer is truncated); `cd` asks the resolver not to
        validate."""
        q = dns.message.make_query(name, rtype, want_dnssec=True, payload=1232)
        if cd:
            q.flags |= dns.flags.CD
        response, _ = self.call(lambda: dns.query.udp_with_fallback(q, server, timeout=5))
        return response

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


class Named:
    """BIND 9 `named` in the foreground (`-g`) with `conf`, in `netns`; ready once it logs
    "running"."""

    def __init__(self, netns: NetNs, directory: Path, listen: Sequence[str], conf: str) -> None:
        for address in listen:
            netns.add_address(address)
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "named.conf"
        self.conf.write_text(conf)
        self.log = directory / "named.log"
        with self.log.open("w") as log:
            self.proc = netns.popen(
                [tool("named"), "-g", "-4", "-c", str(self.conf)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while "running" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"named did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def options(directory: Path, listen: Sequence[str], *, recursion: bool) -> str:
    """The `options` block of a named.conf: listening on `listen` port 53 only."""
    validation = "yes" if recursion else "no"
    return f"""\
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    listen-on port 53 {{ {" ".join(f"{a};" for a in listen)} }};
    listen-on-v6 {{ none; }};
    recursion {"yes" if recursion else "no"};
    dnssec-validation {validation};
    notify no;
    empty-zones-enable no;
}};
controls {{ }};
"""


def keygen(directory: Path, zone: str, algorithm: int = 13, *, ksk: bool = True) -> Path:
    """`dnssec-keygen`: a key for `zone` in `directory`; returns its .key file."""
    cmd = [tool("dnssec-keygen"), "-q", "-K", str(directory), "-a", str(algorithm)]
    done = _run([*cmd, *(["-f", "KSK"] if ksk else []), zone])
    assert done.returncode == 0, done.stderr
    return directory / f"{done.stdout.strip()}.key"


def signzone(zone_file: Path, zone: str, keys: Sequence[Path]) -> Path:
    """`dnssec-signzone` with `keys` (each signs everything: -z); returns the signed file."""
    signed = zone_file.with_suffix(".signed")
    cmd = [tool("dnssec-signzone"), "-z", "-o", zone, "-f", str(signed), "-K", str(keys[0].parent)]
    cmd += ["-d", str(zone_file.parent)]  # its dsset- file, else in the current directory
    done = _run([*cmd, str(zone_file), *(str(k.with_suffix("")) for k in keys)])
    assert done.returncode == 0, done.stderr
    return signed


def dsfromkey(key_file: Path) -> str:
    """The DS (SHA-256) of a key as `dnssec-dsfromkey -2` prints it: `zone. IN DS ...`."""
    done = _run([tool("dnssec-dsfromkey"), "-2", str(key_file)])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ad(response: dns.message.Message) -> bool:
    """Whether a validating resolver vouched for the answer (the AD bit)."""
    return bool(response.flags & dns.flags.AD)


def rcode(response: dns.message.Message) -> str:
    return dns.rcode.to_text(response.rcode())


def values(response: dns.message.Message, rtype: str) -> tuple[str, ...]:
    code = dns.rdatatype.from_text(rtype)
    return tuple(
        sorted(rd.to_text() for rrset in response.answer if rrset.rdtype == code for rd in rrset)
    )


SOA = "@ SOA ns hostmaster 1 3600 600 86400 30"


def zone_file(directory: Path, zone: str, records: str) -> Path:
    """A zone file for `zone` (TTL 60, an SOA, then `records` in zone-file syntax)."""
    path = directory / f"{zone.rstrip('.') or 'root'}.zone"
    path.write_text(f"$ORIGIN {zone}\n$TTL 60\n{SOA}\n{records}\n")
    return path


def signed_zone(directory: Path, zone: str, records: str, algorithm: int = 13) -> tuple[Path, Path]:
    """A zone signed by BIND with a new CSK: (its signed zone file, its .key file)."""
    key = keygen(directory, zone, algorithm)
    unsigned = zone_file(directory, zone, f"{records}\n$INCLUDE {key}")
    return signzone(unsigned, zone, [key]), key


def authoritative(
    netns: NetNs, directory: Path, listen: Sequence[str], zones: dict[str, Path]
) -> Named:
    """An authoritative-only named serving `zones` (name: zone file) on `listen`:53."""
    blocks = "".join(f'zone "{z}" {{ type primary; file "{f}"; }};\n' for z, f in zones.items())
    return Named(netns, directory, listen, options(directory, listen, recursion=False) + blocks)


def resolver(
    netns: NetNs, directory: Path, address: str, root_server: str, root_key: Path
) -> Named:
    """A validating recursive named on `address`:53: root hints at `root_server`, the root's
    key (a .key file) its only trust anchor."""
    directory.mkdir(parents=True, exist_ok=True)
    hints = directory / "root.hints"
    hints.write_text(f". 3600000 NS ns.test.\nns.test. 3600000 A {root_server}\n")
    anchors = anchor_file(directory / "anchors.conf", ".", dnskey_of(root_key))
    conf = (
        options(directory, [address], recursion=True)
        + f'include "{anchors}";\nzone "." {{ type hint; file "{hints}"; }};\n'
    )
    return Named(netns, directory, [address], conf)


class ServeIn:
    """`dnsfailover serve` as a subprocess in `netns`, answering on `address`:53."""

    def __init__(self, netns: NetNs, config: Path, state: Path, address: str) -> None:
        netns.add_address(address)
        self.log = config.with_suffix(".log")
        with self.log.open("ab") as log:
            self.proc = netns.popen(
                [
                    str(BIN),
                    "serve",
                    str(config),
                    "--dns",
                    f"{address}:53",
                    "--api",
                    f"{address}:0",
                    "--state",
                    str(state),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if f"on {address}:53" not in line:
            self.stop()
            raise AssertionError(f"serve did not start: {line!r}\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
