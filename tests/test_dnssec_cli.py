"""`dnsfailover dnssec ds|keys`, run as a user runs it: the DS records for the parent, from
keys generated into the state directory on first use (and the same ones after), equal to
what BIND's `dnssec-dsfromkey` computes from the files; no private material printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dnssec_support import CONFIG, ORIGIN, tool

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
    # the server does not sign yet: a DS at the parent would make the zone fail validation
    assert "does not serve example.test. signed yet" in first.stderr
    again = run("dnssec", "ds", str(path), ORIGIN, "--state", str(state))
    assert (again.returncode, again.stdout) == (0, first.stdout)
    assert "generated" not in again.stderr  # the same keys

    listed = run("dnssec", "keys", str(path), ORIGIN, "--state", str(state))
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["TAG", "ALGORITHM", "ROLE", "FLAGS", "FILES"]
    assert [r.split()[3] for r in rows[1:]] == ["ksk", "zsk"]
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
