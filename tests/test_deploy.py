"""The shipped systemd unit and Dockerfile: what a user relies on is checked against the
real `dnsfailover` command and the repository (neither systemd nor Docker runs here)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dnsfailover.api.openapi import ROUTES
from dnsfailover.cli.main import DEFAULT_API, build_parser
from dnsfailover.runtime.systemd import BEAT

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "dnsfailover.service"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).with_name("dnsfailover")


def unit() -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(key: str) -> str:
    (value,) = unit()["Service"][key]
    return value


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def last_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def docker(word: str) -> list[str]:
    return [rest for w, rest in last_stage() if w == word]


@pytest.fixture(scope="module")
def serve_help() -> str:
    """What the real command says it accepts."""
    proc = subprocess.run(
        [str(BIN), "serve", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout


def flags(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("--")]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def exec_start() -> list[str]:
    return shlex.split(service("ExecStart"))


def docker_cmd() -> list[str]:
    (entry,) = docker("ENTRYPOINT")
    (cmd,) = docker("CMD")
    argv: list[str] = json.loads(entry) + json.loads(cmd)
    return argv


# -- systemd --------------------------------------------------------------------------------


def test_unit_runs_dnsfailover_serve_with_flags_the_command_has(serve_help: str) -> None:
    argv = exec_start()
    assert Path(argv[0]).name == "dnsfailover"
    assert argv[1] == "serve"
    for flag in flags(argv):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", serve_help), f"serve has no {flag}"
    build_parser().parse_args(argv[1:])  # every value is accepted too (SystemExit if not)
    assert option(argv, "--dns") == "0.0.0.0:53"
    assert option(argv, "--api") == DEFAULT_API
    assert option(argv, "--log-format") == "json"


def test_unit_reloads_with_hup_and_restarts_on_failure() -> None:
    assert shlex.split(service("ExecReload")) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert service("Restart") == "on-failure"


def test_unit_waits_for_ready_and_has_the_engine_loop_feed_its_watchdog() -> None:
    """READY=1, WATCHDOG=1 and STATUS= come from the main process (tests/test_systemd_notify.py
    shows when).  The engine loop does not beat during a decision: the watchdog leaves room
    for a reload's decision of every name, and for a few idle beats."""
    assert service("Type") == "notify"
    assert service("NotifyAccess") == "main"
    watchdog = service("WatchdogSec")
    assert watchdog.endswith("s")
    assert float(watchdog.removesuffix("s")) >= max(10, 2 * BEAT)
    start = service("TimeoutStartSec")
    assert float(start.removesuffix("s")) >= 90  # a cold start probes and decides first
    assert "AF_UNIX" in service("RestrictAddressFamilies").split()  # the notify socket


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` (Debian's systemd, scripts/system-deps) finds nothing to say
    about the unit; it wants ExecStart's binary to exist, so it points at this checkout's."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "install Debian's systemd (scripts/system-deps)"

    def verify(text: str) -> str:
        path = tmp_path / "dnsfailover.service"
        path.write_text(text.replace("/usr/local/bin/dnsfailover", str(BIN)))
        proc = subprocess.run(
            [analyze, "verify", str(path)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    text = UNIT.read_text()
    assert verify(text) == ""
    # It does read the unit: a wrong value is reported.
    assert "notify access" in verify(text.replace("NotifyAccess=main", "NotifyAccess=mian"))


def test_unit_runs_unprivileged_with_port_53_and_its_state_dir() -> None:
    svc = unit()["Service"]
    assert svc.get("DynamicUser") == ["yes"] or svc.get("User", ["root"])[0] not in ("root", "0")
    assert service("AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert service("CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    state = Path(option(exec_start(), "--state"))
    assert state.parent == Path("/var/lib") / service("StateDirectory")
    config = Path(exec_start()[2])
    assert config.parent == Path("/etc") / service("ConfigurationDirectory")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "SystemCallFilter": "@system-service",
    }.items():
        assert service(key) == value, key
    assert set(service("RestrictAddressFamilies").split()) >= {"AF_INET", "AF_INET6"}
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]


# -- Dockerfile -----------------------------------------------------------------------------


def test_image_runs_as_a_user_that_is_not_root() -> None:
    (user,) = docker("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert any("useradd" in run and user in run for run in docker("RUN"))


def test_image_command_uses_flags_the_command_has(serve_help: str) -> None:
    argv = docker_cmd()
    assert argv[:2] == ["dnsfailover", "serve"]
    for flag in flags(argv):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", serve_help), f"serve has no {flag}"
    build_parser().parse_args(argv[1:])
    config = argv[2]
    assert any(copy.split()[-1] == config for copy in docker("COPY")), "config not in image"
    (volume,) = docker("VOLUME")
    assert Path(option(argv, "--state")).parent == Path(json.loads(volume)[0])


def test_exposed_ports_match_the_command_and_the_healthcheck() -> None:
    argv = docker_cmd()
    dns_port = option(argv, "--dns").rsplit(":", 1)[1]
    api_port = option(argv, "--api").rsplit(":", 1)[1]
    assert dns_port == "53"
    assert api_port == DEFAULT_API.rsplit(":", 1)[1]
    exposed = {p for line in docker("EXPOSE") for p in line.split()}
    assert exposed == {f"{dns_port}/udp", f"{dns_port}/tcp", f"{api_port}/tcp"}
    (check,) = docker("HEALTHCHECK")
    url = re.search(r"http://[^'\"\s]+", check)
    assert url is not None
    assert url.group(0) == f"http://127.0.0.1:{api_port}/healthz"
    assert "/healthz" in {route.path for route in ROUTES}


def test_image_installs_the_package_and_every_provider() -> None:
    names = {
        tomllib.loads(path.read_text())["project"]["name"]
        for path in [ROOT / "pyproject.toml", *ROOT.glob("providers/*/pyproject.toml")]
    }
    installs = " ".join(run for run in docker("RUN") if "pip install" in run).split()
    # a requirement as pip reads it: quotes and extras off
    installed = {re.sub(r"\[.*\]$", "", word.strip("'\"")) for word in installs}
    assert names <= installed, names - installed
    assert any(step.startswith("python:3.11-slim") for w, step in instructions() if w == "FROM")


def test_dockerignore_keeps_what_the_build_copies() -> None:
    """A build-context exclusion that matches a COPY source breaks `docker build`."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        src
        for word, rest in instructions()
        if word == "COPY" and not rest.startswith("--from")
        for src in rest.split()[:-1]
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        files = [ROOT / src] if (ROOT / src).is_file() else list((ROOT / src).rglob("*.py"))
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            hit = [p for p in patterns if fnmatch.fnmatch(rel, p.removeprefix("**/"))]
            hit += [p for p in patterns if rel == p or rel.startswith(p.rstrip("/") + "/")]
            # Cached bytecode is not a source; everything else the build needs must be there.
            assert not hit or rel.endswith(".pyc"), (rel, hit)
    for secret in (".venv", ".git", "*.db", "**/*.key"):
        assert secret in patterns, secret


def test_image_builds_and_installs_from_the_pinned_constraints() -> None:
    """Every pip step takes constraints/docker.txt (./scripts/constraints), so a rebuild
    gets the same dependency versions; the build stage copies it from the repository."""
    steps = instructions()
    pips = [
        rest for word, rest in steps if word == "RUN" and re.search(r"pip (wheel|install)", rest)
    ]
    assert len(pips) == 2, pips
    copied = {
        rest.split()[-1]: rest.split()[0]
        for word, rest in steps
        if word == "COPY" and not rest.startswith("--from")
    }
    assert copied.get("./constraints/docker.txt") == "constraints/docker.txt", copied
    assert copied.get("/tmp/constraints.txt") == "constraints/docker.txt", copied
    wheel, install = pips
    assert "--constraint constraints/docker.txt" in wheel
    assert "--constraint /tmp/constraints.txt" in install
    assert "--no-index" in install  # only the wheels built under the constraints
    pinned = (ROOT / "constraints" / "docker.txt").read_text().splitlines()
    assert all(line.startswith("#") or "==" in line for line in pinned if line.strip())


def test_image_has_oci_labels_that_match_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = " ".join(rest for word, rest in last_stage() if word == "LABEL")
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', text))
    args = {
        name: value
        for word, rest in last_stage()
        if word == "ARG"
        for name, _, value in [rest.partition("=")]
    }

    def value(key: str) -> str:
        raw = labels[f"org.opencontainers.image.{key}"]
        m = re.fullmatch(r"\$\{(\w+)\}", raw)
        return args[m.group(1)].strip('"') if m else raw

    assert value("title") == "dnsfailover"
    assert value("version") == project["version"]
    assert value("licenses") == project["license"]
    assert value("description") == project["description"]
    assert labels["org.opencontainers.image.source"] == "${SOURCE_URL}"  # the builder's URL
    assert "SOURCE_URL" in args
    assert "--build-arg SOURCE_URL=" in DOCKERFILE.read_text()  # the header says how
