"""`dnsfailover dnssec ds|keys`, run as a user runs it: the DS records for the parent, from
keys generated into the state directory on first use (and the same ones after), equal to
what BIND's `dnssec-dsfromkey` computes from the files; no private material printed."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dnssec_support import CONFIG, ORIGIN, tool
from support import free_port

BIN = str(Path(sys.executable).with_name("dnsfailover"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)


def _config(tmp_path: Path, dnssec: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("DNSSEC", dnssec))
    return path


def test_ds_generates_keys_once_and_prints_what_bind_computes(tmp_path: Path) -> None:
    path = _config(tmp_path, "{keys: ksk+zsk, algorithm: 15}")
    state = tmp_path / "var" / "state.db"
    first = run("dnssec", "ds", str(path), "example.test", "--state", str(state))
    assert first.returncode == 0, first.stderr
    directory = tmp_path / "var" / "state.db.keys" / "example.test"
    ksk = next(p for p in directory.glob("*.key") if " 257 3 15 " in p.read_text())
    assert f"generated KSK {int(ksk.name.split('+')[2][:5])} (ED25519)" in first.stderr
    assert "generated ZSK" in first.stderr
    assert str(ksk) in first.stderr
    (line,) = first.stdout.splitlines()
    bind = subprocess.run(
        [tool("dnssec-dsfromkey"), "-2", str(ksk)], capture_output=True, text=True, timeout=60
    )
    assert line == bind.stdout.strip()
    assert line.startswith(f"{ORIGIN} IN DS ")
    again = run("dnssec", "ds", str(path), ORIGIN, "--state", str(state))
    assert (again.returncode, again.stdout) == (0, first.stdout)
    assert "generated" not in again.stderr  # the same keys

    listed = run("dnssec", "keys", str(path), ORIGIN, "--state", str(state))
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["TAG", "ALGORITHM", "ROLE", "FLAGS", "STATE", "CDS", "FILES"]
    assert [r.split()[3] for r in rows[1:5:2]] == ["ksk", "zsk"]
    assert [r.split()[5:7] for r in rows[1:5:2]] == [["active", "yes"], ["active", "no"]]
    assert rows[2].split()[0] == "published"
    assert "inactive never, removed never" in rows[2]
    assert "next ZSK rollover: " in listed.stdout  # zsk_lifetime: 90d by default
    assert str(ksk) in listed.stdout
    secrets = [
        line.split(": ", 1)[1]
        for p in directory.glob("*.private")
        for line in p.read_text().splitlines()
        if line.startswith("PrivateKey:")
    ]
    assert len(secrets) == 2
    for secret in secrets:
        assert secret not in first.stdout + first.stderr + listed.stdout + listed.stderr


def test_key_files_from_the_config_are_used_as_they_are(tmp_path: Path) -> None:
    done = subprocess.run(
        [tool("dnssec-keygen"), "-q", "-a", "ECDSAP256SHA256", "-f", "KSK", "-K", str(tmp_path),
         ORIGIN],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    key = tmp_path / f"{done.stdout.strip()}.key"
    path = _config(tmp_path, f"{{key_files: [{key.name}]}}")
    state = tmp_path / "state.db"
    out = run("dnssec", "ds", str(path), ORIGIN, "--state", str(state))
    assert out.returncode == 0, out.stderr
    bind = subprocess.run(
        [tool("dnssec-dsfromkey"), "-2", str(key)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == bind.stdout.strip()
    assert "generated" not in out.stderr
    assert not Path(f"{state}.keys").exists(), "nothing generated when key_files are given"


def test_wrong_requests_exit_2(tmp_path: Path) -> None:
    path = _config(tmp_path, "{}")
    state = str(tmp_path / "state.db")
    unknown = run("dnssec", "ds", str(path), "other.test.", "--state", state)
    assert unknown.returncode == 2
    assert "other.test. is not a zone of" in unknown.stderr
    plain = tmp_path / "plain.yaml"
    plain.write_text(CONFIG.replace("    dnssec: DNSSEC\n", ""))
    unsigned = run("dnssec", "keys", str(plain), ORIGIN, "--state", state)
    assert unsigned.returncode == 2
    assert "has no dnssec: section" in unsigned.stderr
    bad = _config(tmp_path, "{algorithm: 7}")
    broken = run("dnssec", "ds", str(bad), ORIGIN, "--state", state)
    assert broken.returncode == 2
    assert "unknown algorithm 7" in broken.stderr
    assert not Path(f"{state}.keys").exists()


def test_two_processes_asking_at_once_make_one_set_of_keys(tmp_path: Path) -> None:
    """A node and `dnssec ds` (or two of them) may both find no keys: the lock in the key
    directory lets one generate and the other read what it wrote."""
    path = _config(tmp_path, "{}")
    state = str(tmp_path / "state.db")
    cmd = [BIN, "dnssec", "ds", str(path), ORIGIN, "--state", state]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    assert len({out for out, _ in outs}) == 1
    assert sum("generated CSK" in err for _, err in outs) == 1
    directory = tmp_path / "state.db.keys" / "example.test"
    assert len(list(directory.glob("*.private"))) == 1
    assert not list(directory.glob(".*.tmp"))


def test_moving_from_csk_to_ksk_plus_zsk_keeps_the_ds(tmp_path: Path) -> None:
    """The CSK (flags 257) becomes the KSK and a ZSK is added: the parent's DS stays right."""
    state = str(tmp_path / "state.db")
    csk = run("dnssec", "ds", str(_config(tmp_path, "{}")), ORIGIN, "--state", state)
    split = run("dnssec", "ds", str(_config(tmp_path, "{keys: ksk+zsk}")), ORIGIN, "--state", state)
    assert csk.returncode == split.returncode == 0
    assert split.stdout == csk.stdout
    assert "generated ZSK" in split.stderr
    assert "generated KSK" not in split.stderr


@contextlib.contextmanager
def parent(directory: Path, ds: list[str]) -> Iterator[str]:
    """BIND 9 serving the parent zone `test.` on 127.0.0.1, delegating example.test. with
    the DS records `ds`; yields `127.0.0.1:PORT`."""
    directory.mkdir()
    records = "\n".join(line.replace(" IN DS ", " 300 IN DS ") for line in ds)
    (directory / "test.db").write_text(
        "$TTL 3600\n"
        "test. IN SOA ns.test. hostmaster.test. 1 3600 600 604800 300\n"
        "test. IN NS ns.test.\nns.test. IN A 127.0.0.1\n"
        "example.test. IN NS ns1.example.test.\nns1.example.test. IN A 192.0.2.1\n"
        f"{records}\n"
    )
    port = free_port()
    (directory / "named.conf").write_text(
        f"""\
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
zone "test." {{ type primary; file "{directory}/test.db"; }};
"""
    )
    log = directory / "named.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [tool("named"), "-4", "-g", "-c", str(directory / "named.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while b"running" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"named did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _times(key_file: Path) -> dict[str, str]:
    """The key's times as BIND's `dnssec-settime -up all` reads them from its files."""
    done = subprocess.run(
        [tool("dnssec-settime"), "-u", "-p", "all", str(key_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


def test_a_csk_rollover_checked_at_the_parent_by_a_ds_query(tmp_path: Path) -> None:
    """Start: a new CSK beside the old one, its DS printed; `--complete` asks a real parent
    server (BIND) for the DS and refuses until it has the new one, then retires the old
    key with times BIND reads back; every unsafe step in between exits 2 with what to do."""
    path = _config(tmp_path, "{}")
    state = str(tmp_path / "state.db")
    directory = tmp_path / "state.db.keys" / "example.test"
    first = run("dnssec", "ds", str(path), ORIGIN, "--state", state)
    assert first.returncode == 0, first.stderr
    old_ds = first.stdout.strip()
    started = run("dnssec", "rollover", str(path), ORIGIN, "--state", state)
    assert started.returncode == 0, started.stderr
    new_ds = started.stdout.strip()
    assert new_ds.startswith(f"{ORIGIN} IN DS ")
    assert new_ds != old_ds
    new_tag = new_ds.split()[3]
    new_key = next(directory.glob(f"*+{int(new_tag):05d}.key"))
    bind = subprocess.run(
        [tool("dnssec-dsfromkey"), "-2", str(new_key)], capture_output=True, text=True, timeout=60
    )
    assert bind.stdout.strip() == new_ds
    assert "Add its DS (above) at the parent" in started.stderr
    both = run("dnssec", "ds", str(path), ORIGIN, "--state", state)
    assert sorted(both.stdout.splitlines()) == sorted([old_ds, new_ds])
    again = run("dnssec", "rollover", str(path), ORIGIN, "--state", state, "--csk")
    assert again.returncode == 2
    assert "is in progress" in again.stderr
    listed = run("dnssec", "keys", str(path), ORIGIN, "--state", state)
    assert f"rollover: CSK {old_ds.split()[3]} -> {new_tag} started" in listed.stdout
    # the new DNSKEY is not in every cache before the DNSKEY TTL + propagation (2h)
    early = run("dnssec", "rollover", str(path), ORIGIN, "--state", state, "--complete", "--force")
    assert early.returncode == 2
    assert "may not be in every cached DNSKEY RRset" in early.stderr
    # ... as if it had started three hours ago (BIND's dnssec-settime moves the times)
    settime = [tool("dnssec-settime"), "-P", "now-3h", "-A", "now-3h", "-P", "sync", "now-3h"]
    moved = subprocess.run([*settime, str(new_key)], capture_output=True, text=True, timeout=60)
    assert moved.returncode == 0, moved.stderr
    unchecked = run("dnssec", "rollover", str(path), ORIGIN, "--state", state, "--complete")
    assert unchecked.returncode == 2
    assert "Give --parent HOST[:PORT]" in unchecked.stderr
    with parent(tmp_path / "without", [old_ds]) as server:
        missing = run(
            "dnssec", "rollover", str(path), ORIGIN, "--state", state, "--complete",
            "--parent", server,
        )  # fmt: skip
    assert missing.returncode == 2
    assert f"does not serve the DS of key {new_tag}" in missing.stderr
    assert f"(it serves: {old_ds.split()[3]})" in missing.stderr
    with parent(tmp_path / "with", [old_ds, new_ds]) as server:
        before = time.time()
        done = run(
            "dnssec", "rollover", str(path), ORIGIN, "--state", state, "--complete",
            "--parent", server,
        )  # fmt: skip
        after = time.time()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == new_ds
    assert "The parent may drop the old DS now" in done.stderr
    old_key = next(directory.glob(f"*+{int(old_ds.split()[3]):05d}.key"))
    old = _times(old_key)
    # signs until no resolver holds a DS set without the new DS: the parent's DS TTL (300)
    # + the propagation delay; removed after its signatures on the data can be gone
    assert int(before) + 300 + 3600 <= int(old["Inactive"]) <= after + 300 + 3600 + 1
    validity = 14 * 86400 - 0
    assert int(old["Delete"]) == int(old["Inactive"]) + validity + 3600 + 3600
    assert int(before) <= int(old["SYNC Delete"]) <= after
    assert _times(new_key)["Inactive"] == "UNSET"
    assert run("dnssec", "ds", str(path), ORIGIN, "--state", state).stdout.strip() == new_ds
    listed = run("dnssec", "keys", str(path), ORIGIN, "--state", state)
    assert "completed" in listed.stdout
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows[old_ds.split()[3]][5:7] == ["active", "no"]  # signing a while, no CDS
    assert rows[new_tag][5:7] == ["active", "yes"]
    twice = run("dnssec", "rollover", str(path), ORIGIN, "--state", state, "--complete", "--force")
    assert twice.returncode == 2
    assert "completed already" in twice.stderr
    next_one = run("dnssec", "rollover", str(path), ORIGIN, "--state", state)
    assert next_one.returncode == 2
    assert "the previous rollover is finishing" in next_one.stderr


def test_rollover_refusals_exit_2(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    split = _config(tmp_path, "{keys: ksk+zsk}")
    nothing = run("dnssec", "rollover", str(split), ORIGIN, "--state", state)
    assert nothing.returncode == 2
    assert "has no keys in" in nothing.stderr
    assert run("dnssec", "ds", str(split), ORIGIN, "--state", state).returncode == 0
    wrong = run("dnssec", "rollover", str(split), ORIGIN, "--state", state, "--csk")
    assert wrong.returncode == 2
    assert "its KSK rolls (--ksk), not a CSK" in wrong.stderr
    none = run("dnssec", "rollover", str(split), ORIGIN, "--state", state, "--complete", "--force")
    assert none.returncode == 2
    assert "no rollover in progress" in none.stderr
    assert run("dnssec", "rollover", str(split), ORIGIN, "--state", state, "--ksk").returncode == 0
    closed = f"127.0.0.1:{free_port()}"
    away = run(
        "dnssec", "rollover", str(split), ORIGIN, "--state", state, "--complete",
        "--parent", closed,
    )  # fmt: skip
    assert away.returncode == 2
    assert "may not be in every cached DNSKEY RRset" in away.stderr  # checked before asking
    new_key = max(
        tmp_path.glob("state.db.keys/example.test/*.key"), key=lambda p: p.stat().st_mtime
    )
    settime = [tool("dnssec-settime"), "-P", "now-3h", "-A", "now-3h", str(new_key)]
    assert subprocess.run(settime, capture_output=True, timeout=60).returncode == 0
    away = run(
        "dnssec", "rollover", str(split), ORIGIN, "--state", state, "--complete",
        "--parent", closed,
    )  # fmt: skip
    assert away.returncode == 2
    assert f"cannot ask the parent's server 127.0.0.1 port {closed.split(':')[1]}" in away.stderr
    done = subprocess.run(
        [tool("dnssec-keygen"), "-q", "-a", "ECDSAP256SHA256", "-f", "KSK", "-K", str(tmp_path),
         ORIGIN],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    listed = _config(tmp_path, f"{{key_files: [{done.stdout.strip()}]}}")
    files = run("dnssec", "rollover", str(listed), ORIGIN, "--state", state)
    assert files.returncode == 2
    assert "keys are key_files: roll them with BIND's tools" in files.stderr
