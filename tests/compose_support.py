"""docker-compose.yml read as Compose reads it, and its services run as local processes.

There is no Docker daemon where the tests run, so `Loopback` runs the compose file's own
`command:` and `environment:` entries as processes on this machine, translating only what a
container network gives each service: its address (the service's `ipv4_address`, moved to
127.0.0.x with the same last byte; `0.0.0.0` and the service names mean that address), its
ports (each container port becomes one port free on every address used) and its files (a
mounted volume becomes the repository file it mounts, a config file with the same
translation; any other absolute path a directory of the test's own).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from etcd_support import ETCD
from support import BIN

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR:+alt}` and `$$`
    in every string of `value`, as Compose substitutes them before it validates."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        got = environ.get(name)
        empty = got is None or (got == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else str(got)
        if op in (":?", "?"):
            if empty:
                raise ValueError(f"{name}: {arg}")
            return str(got)
        if op in (":+", "+"):
            return "" if empty else arg
        return got or ""

    return _VARIABLE.sub(one, value)


def load_compose(environ: Mapping[str, str], path: Path = COMPOSE) -> dict[str, Any]:
    """The compose file after YAML anchors, merge keys and interpolation."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    result: dict[str, Any] = interpolate(data, environ)
    return result


def image_entrypoint(dockerfile: Path = ROOT / "Dockerfile") -> list[str]:
    """The exec-form ENTRYPOINT of the repository's Dockerfile (the image `build: .` makes)."""
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            words = json.loads(line.removeprefix("ENTRYPOINT").strip())
            assert isinstance(words, list)
            return [str(w) for w in words]
    raise AssertionError("the Dockerfile has no ENTRYPOINT")


def free_on_all(addresses: list[str], taken: set[int], tries: int = 100) -> int:
    """A port free for TCP and UDP on every one of `addresses`, not already in `taken`."""
    for _ in range(tries):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = int(s.getsockname()[1])
        if port in taken:
            continue
        try:
            for address in addresses:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((address, port))
        except OSError:
            continue
        return port
    raise OSError("no port is free on every loopback address of the compose services")


_HOSTPORT = re.compile(r"(?<![\w.-])(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>\d{1,5})(?!\d)")


@dataclass
class Loopback:
    """The compose network moved onto loopback (see the module docstring)."""

    compose: dict[str, Any]
    workdir: Path
    addresses: dict[str, str] = field(default_factory=dict)  # service → 127.0.0.x
    moved: dict[str, str] = field(default_factory=dict)  # compose address → 127.0.0.x
    ports: dict[int, int] = field(default_factory=dict)  # container port → local port
    files: dict[Path, Path] = field(default_factory=dict)  # repository file → translated copy

    def __post_init__(self) -> None:
        for name, service in self.compose["services"].items():
            found = [
                net["ipv4_address"]
                for net in (service.get("networks") or {}).values()
                if isinstance(net, dict) and "ipv4_address" in net
            ]
            assert len(found) == 1, f"{name}: expected one ipv4_address, got {found}"
            last = ipaddress.IPv4Address(found[0]).packed[-1]
            self.addresses[name] = self.moved[found[0]] = f"127.0.0.{last}"

    # -- addresses and ports -----------------------------------------------------------------

    def port(self, port: int) -> int:
        if port not in self.ports:
            taken = set(self.ports.values())
            self.ports[port] = free_on_all(sorted(set(self.addresses.values())), taken)
        return self.ports[port]

    def text(self, text: str, own: str | None = None) -> str:
        """`HOST:PORT` (HOST a compose address, a service name or 0.0.0.0, the service's own)
        and bare compose addresses, moved."""

        def hostport(m: re.Match[str]) -> str:
            host = m.group("host")
            if host == "0.0.0.0" and own is not None:
                local = self.addresses[own]
            elif host in self.addresses:
                local = self.addresses[host]
            elif host in self.moved:
                local = self.moved[host]
            else:
                return m.group(0)
            return f"{local}:{self.port(int(m.group('port')))}"

        text = _HOSTPORT.sub(hostport, text)
        for compose_address, local in self.moved.items():
            text = re.sub(rf"(?<![\d.]){re.escape(compose_address)}(?![\d.])", local, text)
        return text

    def config(self, value: Any, key: str = "") -> Any:
        """A dnsfailover config (parsed YAML) moved: its strings, and its `port` numbers."""
        if isinstance(value, dict):
            return {k: self.config(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.config(v, key) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int) and key in ("port", "check_port"):
            return self.port(value)
        return value

    # -- files ------------------------------------------------------------------------------

    def volume(self, service: str, path: str) -> Path | None:
        """The repository file mounted at `path` in `service`, or None."""
        for spec in self.compose["services"][service].get("volumes") or []:
            source, target = spec.split(":")[:2]
            if path == target:
                return (ROOT / str(source)).resolve()
        return None

    def file(self, service: str, path: str) -> str:
        mounted = self.volume(service, path)
        if mounted is None:  # the container's own filesystem: a directory of the test's
            local = self.workdir / service / path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            return str(local)
        if mounted.suffix not in (".yaml", ".yml"):
            return str(mounted)
        if mounted not in self.files:
            copy = self.workdir / "files" / mounted.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(yaml.safe_dump(self.config(yaml.safe_load(mounted.read_text()))))
            self.files[mounted] = copy
        return str(self.files[mounted])

    def arg(self, service: str, word: str) -> str:
        flag, eq, value = word.partition("=")
        if eq and flag.startswith("-"):
            return f"{flag}={self.arg(service, value)}"
        if word.startswith("/"):
            return self.file(service, word)
        return self.text(word, own=service)

    # -- processes --------------------------------------------------------------------------

    def argv(self, service: str) -> list[str]:
        spec = self.compose["services"][service]
        command = spec["command"]
        words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
        if spec.get("build") is not None:
            words = image_entrypoint() + words
        programs = {"dnsfailover": str(BIN), "python": sys.executable, "etcd": ETCD}
        return [programs.get(words[0], words[0]), *(self.arg(service, w) for w in words[1:])]

    def environment(self, service: str) -> dict[str, str]:
        given = self.compose["services"][service].get("environment") or {}
        if isinstance(given, list):
            given = dict(item.partition("=")[::2] for item in given)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DNSFAILOVER_", "ETCD"))  # only what the compose file gives
        }
        env.update({str(k): self.text(str(v)) for k, v in given.items() if v is not None})
        return env

    def start(self, service: str) -> subprocess.Popen[str]:
        log = (self.workdir / f"{service}.log").open("ab")
        try:
            return subprocess.Popen(
                self.argv(service),
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.environment(service),
                text=True,
            )
        finally:
            log.close()

    def log(self, service: str) -> str:
        path = self.workdir / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
