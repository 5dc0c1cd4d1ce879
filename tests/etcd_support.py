"""A real etcd (Debian's `etcd` 3.4 binary) on free loopback ports, and its pytest fixture.

Use it from a test module with `from etcd_support import etcd` (tests/ is on sys.path).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Etcd:
    """One single-member etcd; `restart()` keeps its data dir and ports."""

    def __init__(self, directory: Path | None = None, extra: tuple[str, ...] = ()) -> None:
        self._own_dir = directory is None
        self._extra = extra  # more etcd flags, e.g. ("--max-request-bytes", "8192")
        self.dir = directory or Path(tempfile.mkdtemp(prefix="etcd-"))
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.dir / "etcd.log"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        """The running etcd's process id (benchmarks count its CPU)."""
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float = 15.0) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            ETCD, "--name", "default", "--data-dir", str(self.dir / "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}", "--listen-metrics-urls", "",
            "--log-level", "warn", *self._extra,
        ]  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self._log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd not healthy after {timeout} s: {self._log.read_text()[-2000:]}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    """A started etcd, stopped (and its data removed) after the test."""
    server = Etcd()
    try:
        server.start()
        yield server
    finally:
        server.close()
