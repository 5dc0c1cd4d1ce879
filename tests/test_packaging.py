"""Packaging: distribution names, pins, extras imported only when a config needs them, a fast
`--version`, and the scripts that install the system packages and the Docker constraints.

Everything runs the real `dnsfailover` command in a subprocess.  A missing extra is shown
honestly: a `sitecustomize` on PYTHONPATH puts a meta-path finder in front of every import
that refuses the extra's modules (and logs each attempt), as an interpreter without them
installed would; nothing in dnsfailover is mocked.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).with_name("dnsfailover")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT: dict[str, Any] = PYPROJECT["project"]
FLOORS = ROOT / "constraints" / "floors.txt"
DOCKER = ROOT / "constraints" / "docker.txt"

#: what `--version` and `--help` must not import (each is tens to hundreds of ms)
HEAVY = ("aiohttp", "dnslib", "boto3", "botocore", "aetcd", "grpc", "pydantic", "asyncio", "dns")

BLOCKER = '''
import os, sys

BLOCKED = set(os.environ["BLOCK_MODULES"].split(","))


class Blocker:
    """Refuses the blocked top-level modules as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(os.environ["BLOCK_LOG"], "a") as log:
                log.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
'''


def without(tmp_path: Path, *modules: str) -> tuple[dict[str, str], Path]:
    """An environment in which `modules` cannot be imported, and the file that logs every
    attempt to import one."""
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "blocked.log"
    log.touch()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "BLOCK_MODULES": ",".join(modules),
        "BLOCK_LOG": str(log),
        "PYTHONWARNINGS": "ignore",
    }
    return env, log


def requirements(extra: str | None = None) -> list[Requirement]:
    deps = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(d) for d in deps]


def floor(req: Requirement) -> str | None:
    return next((s.version for s in req.specifier if s.operator == ">="), None)


# -- names ---------------------------------------------------------------------------------


def test_the_core_and_the_providers_have_names_of_their_own() -> None:
    """`dnsfailover` on PyPI is an unrelated project (0.0.4, 2014): never depend on it."""
    assert PROJECT["name"] == "dnsfailover-server"
    assert PROJECT["scripts"] == {"dnsfailover": "dnsfailover.cli.main:main"}
    for path in sorted(ROOT.glob("providers/*/pyproject.toml")):
        project = tomllib.loads(path.read_text())["project"]
        assert project["name"].startswith("dnsfailover-"), path
        names = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
        assert "dnsfailover-server" in names, path
        assert "dnsfailover" not in names, path


def test_nothing_installs_the_unrelated_dnsfailover() -> None:
    for path in [ROOT / "pyproject.toml", *ROOT.glob("providers/*/pyproject.toml")]:
        project = tomllib.loads(path.read_text())["project"]
        extras = project["optional-dependencies"].values()
        reqs = [*project["dependencies"], *(r for deps in extras for r in deps)]
        assert "dnsfailover" not in {canonicalize_name(Requirement(r).name) for r in reqs}, path
    plain = re.compile(r"dnsfailover(\[[^\]]*\])?([=<>~!@;].*)?")
    scripts = [p for p in (ROOT / "scripts").iterdir() if p.is_file()]
    installs = 0
    for path in [ROOT / "Dockerfile", *scripts, *ROOT.glob("terraform/**/*.tf*")]:
        text = re.sub(r"\\\n", " ", path.read_text())
        for m in re.finditer(r"pip (install|wheel|download) (.*)", text):
            installs += 1
            words = [w.strip("'\"") for w in m.group(2).split()]
            assert not [w for w in words if plain.fullmatch(w)], f"{path}: {m.group(0)}"
    assert installs >= 4


def test_the_test_extra_tests_both_optional_extras() -> None:
    (core,) = [r for r in requirements("test") if r.name == "dnsfailover-server"]
    assert {"fast", "cluster", "sns"} <= core.extras


# -- pins ----------------------------------------------------------------------------------


def test_floors_file_installs_exactly_the_lower_bounds() -> None:
    """constraints/floors.txt (what `./scripts/floors` installs to run the tests on the
    oldest versions allowed) is the lower bound of every core and extra dependency."""
    wanted = {}
    for extra in (None, "fast", "cluster", "sns"):
        for req in requirements(extra):
            if canonicalize_name(req.name) == "dnsfailover-server":
                continue
            low = floor(req)
            assert low is not None, f"{req}: give it a lower bound (the oldest that works)"
            wanted[canonicalize_name(req.name)] = low
    pinned = {}
    for line in FLOORS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = version
    assert pinned == wanted, "run ./scripts/constraints"


def test_aiodns_floor_has_the_api_the_dns_check_calls() -> None:
    """aiodns 3.x has no `query_dns`, so every `dns` check failed ("resolver setup failed")
    with the old floor; its answers are pycares 5 records, which the check matches."""
    (aiodns,) = [r for r in requirements() if r.name == "aiodns"]
    (pycares,) = [r for r in requirements() if r.name == "pycares"]
    assert int((floor(aiodns) or "0").split(".")[0]) >= 4
    assert int((floor(pycares) or "0").split(".")[0]) >= 5
    check = (ROOT / "dnsfailover" / "checks" / "dns.py").read_text()
    assert ".query_dns(" in check
    assert "pycares.ARecordData" in check


# -- extras --------------------------------------------------------------------------------


def test_the_core_does_not_depend_on_the_optional_extras() -> None:
    core = {canonicalize_name(r.name) for r in requirements()}
    assert not core & {"boto3", "botocore", "aetcd", "grpcio"}
    assert {canonicalize_name(r.name) for r in requirements("cluster")} >= {"aetcd", "grpcio"}
    assert {canonicalize_name(r.name) for r in requirements("sns")} == {"boto3"}


def test_serve_without_the_extras_imports_neither(tmp_path: Path) -> None:
    """The example config (no cluster, no SNS) serves DNS where neither extra is installed,
    and nothing even tries to import one."""
    env, log = without(tmp_path, "aetcd", "grpc", "boto3", "botocore")
    config = tmp_path / "example.yaml"
    shutil.copy(ROOT / "config" / "example.yaml", config)
    cmd = [str(BIN), "serve", str(config), "--dns", "127.0.0.1:0", "--api", "127.0.0.1:0"]
    cmd += ["--state", str(tmp_path / "state.db")]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        try:
            m = re.search(r"on 127\.0\.0\.1:(\d+)", line)
            assert m, line
            q = dns.message.make_query("ns1.example.test.", "A")
            r = dns.query.udp(q, "127.0.0.1", port=int(m.group(1)), timeout=5)
            assert r.rcode() == dns.rcode.NOERROR
            assert [rd.to_text() for rrset in r.answer for rd in rrset] == ["127.0.0.1"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert log.read_text() == "", "serve tried to import an optional extra"


CLUSTER = """\
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, values: [127.0.0.1]}
regions: [eu, us]
cluster:
  etcd: {endpoints: ["127.0.0.1:2379"], prefix: /dnsfailover/test}
"""

SNS = """\
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, values: [127.0.0.1]}
notifications:
  webhooks:
    - {url: "http://127.0.0.1:9/hook"}
  sns:
    - {topic_arn: "arn:aws:sns:eu-west-1:123456789012:oncall"}
"""


@pytest.mark.parametrize(
    ("extra", "text", "modules", "line", "key"),
    [
        ("cluster", CLUSTER, ("aetcd", "grpc"), 8, "cluster"),
        ("sns", SNS, ("boto3", "botocore"), 11, "notifications.sns[0]"),
    ],
)
def test_a_config_needing_a_missing_extra_names_it(
    tmp_path: Path, extra: str, text: str, modules: tuple[str, ...], line: int, key: str
) -> None:
    config = tmp_path / f"{extra}.yaml"
    config.write_text(text)
    message = f"needs the '{extra}' extra: pip install 'dnsfailover-server[{extra}]'"
    # with the extra installed (the dev venv has both), the config is valid
    ok = subprocess.run([str(BIN), "validate", str(config)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    env, log = without(tmp_path, *modules)
    for command in (["validate"], ["serve", "--dns", "127.0.0.1:0", "--api", "off"]):
        args = [str(BIN), command[0], str(config), *command[1:]]
        if command[0] == "serve":
            args += ["--state", str(tmp_path / "state.db"), "--region", "eu"]
        bad = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 2, (command, bad.stdout, bad.stderr)
        assert bad.stderr.strip() == f"{config}:{line}: {key}: {message}", command
        assert "Traceback" not in bad.stderr
    assert log.read_text(), "the blocker was never asked: the test proves nothing"


# -- a fast --version ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["serve", "--help"]])
def test_version_and_help_import_no_heavy_module(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    run = subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    imported = {
        m.group(1).strip()
        for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|(.*)$", run.stderr, re.M)
    }
    assert "dnsfailover.cli.main" in imported  # the log is there and names what it should
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"{' '.join(args)} imports {heavy}"


# -- scripts/system-deps -------------------------------------------------------------------


def _as_nobody(path: str) -> subprocess.CompletedProcess[str]:
    """scripts/system-deps as an unprivileged user (nobody, when we are root) with
    PATH=`path` and no sbin directories."""
    cmd = ["/bin/bash", str(ROOT / "scripts" / "system-deps")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) runs the script as nobody"
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {"PATH": path, "SYSTEM_DEPS_SBIN": "", "HOME": "/"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def bare_bin() -> Iterator[Path]:
    """An empty directory for PATH that nobody can read (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="dnsfailover-bin-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def link(bare: Path, *tools: str) -> None:
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bare / tool).symlink_to(found)


def test_system_deps_tells_a_non_root_user_the_exact_apt_get_line(bare_bin: Path) -> None:
    link(bare_bin, "id", "apt-get")
    run = _as_nobody(str(bare_bin))
    assert run.returncode == 1
    packages = "bind9-dnsutils bind9 bind9-utils etcd-server chromium chromium-driver knot"
    packages += " knot-dnssecutils pdns-server"
    packages += " gdnsd dnsperf prometheus zsh groff-base systemd iproute2"
    schema = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
    if not schema.exists():  # the one check by file, not by PATH
        packages = packages.replace("pdns-server", "pdns-server pdns-backend-sqlite3")
    assert f"\n  sudo apt-get update && sudo apt-get install -y {packages}\n" in run.stderr
    assert run.stdout == ""


def test_system_deps_is_quiet_for_a_non_root_user_who_has_everything() -> None:
    run = _as_nobody(os.environ["PATH"] + ":/usr/local/sbin:/usr/sbin:/sbin")
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


def test_system_deps_says_what_to_install_without_apt_get(bare_bin: Path) -> None:
    link(bare_bin, "id")
    run = _as_nobody(str(bare_bin))
    assert run.returncode == 1
    assert "no apt-get" in run.stderr
    assert "etcd-server" in run.stderr


# -- the Docker image's constraints --------------------------------------------------------


def test_docker_constraints_pin_every_dependency_within_its_range() -> None:
    pins = {}
    for line in DOCKER.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, line
            assert re.fullmatch(r"[\w.+!-]+", version), line
            pins[canonicalize_name(name)] = version
    wanted = [*requirements(), *requirements("fast")]
    wanted += [*requirements("cluster"), *requirements("sns")]
    for path in ROOT.glob("providers/*/pyproject.toml"):
        wanted += [
            Requirement(d) for d in tomllib.loads(path.read_text())["project"]["dependencies"]
        ]
    for req in wanted:
        name = canonicalize_name(req.name)
        if name == "dnsfailover-server":
            continue
        assert name in pins, f"{name} is not pinned: run ./scripts/constraints"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])


def test_generated_files_say_how_they_are_made() -> None:
    for path in (FLOORS, DOCKER):
        assert "./scripts/constraints" in path.read_text().splitlines()[0], path
    script = (ROOT / "scripts" / "constraints").read_text()
    assert "docker.txt" in script
    assert "floors.txt" in script
