"""Signing keys in BIND's format, checked by BIND itself: the files we write are read by
`dnssec-dsfromkey` (same DS as ours) and `dnssec-signzone`; files `dnssec-keygen` writes
load and sign zones `dnssec-verify` accepts; modes, repr and errors keep the secret in."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import dns.name
import pytest
from dnssec_support import NOW, ORIGIN, config, tool, verify, zone_rrsets

from dnsfailover.dnssec import keys, sign


def _dsfromkey(key_file: Path) -> str:
    done = subprocess.run(
        [tool("dnssec-dsfromkey"), "-2", str(key_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(("algorithm", "mode"), [(13, "csk"), (15, "ksk+zsk")])
def test_generated_keys_are_private_bind_files_whose_ds_bind_computes_alike(
    tmp_path: Path, algorithm: int, mode: keys.KeyMode
) -> None:
    directory = keys.keys_directory(tmp_path / "state.db", ORIGIN)
    assert directory == tmp_path / "state.db.keys" / "example.test"
    made = keys.ensure(directory, ORIGIN, algorithm, mode)
    assert [k.role for k in made.keys] == (["csk"] if mode == "csk" else ["ksk", "zsk"])
    assert len(made.generated) == 2 * len(made.keys)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert directory.parent.stat().st_mode & 0o777 == 0o700
    for key in made.keys:
        assert key.files is not None
        public, private = key.files
        assert public.name == f"K{ORIGIN}+{algorithm:03d}+{key.tag:05d}.key"
        assert private.stat().st_mode & 0o777 == 0o600
        assert public.stat().st_mode & 0o777 == 0o600
        assert "Private-key-format: v1.3" in private.read_text()
    for key in made.ksks:
        assert key.files is not None
        ds = key.ds()
        ours = f"{ORIGIN} IN DS {ds.key_tag} {algorithm} 2 {ds.digest.hex().upper()}"
        assert _dsfromkey(key.files[0]) == ours
    again = keys.ensure(directory, ORIGIN, algorithm, mode)
    assert again.generated == ()
    assert [k.dnskey for k in again.keys] == [k.dnskey for k in made.keys]


def test_bind_signs_a_zone_with_the_keys_we_wrote(tmp_path: Path) -> None:
    made = keys.ensure(tmp_path / "k", ORIGIN, 13, "ksk+zsk")
    ksk, zsk = made.ksks[0].files, made.zsks[0].files
    assert ksk is not None
    assert zsk is not None
    unsigned = tmp_path / "unsigned.zone"
    text = "".join(r.to_text() + "\n" for r in zone_rrsets(config()))
    unsigned.write_text(text + f"$INCLUDE {ksk[0]}\n$INCLUDE {zsk[0]}\n")
    out = tmp_path / "bind-signed.zone"
    cmd = [tool("dnssec-signzone"), "-d", str(tmp_path), "-o", ORIGIN, "-f", str(out)]
    cmd += ["-k", str(ksk[0])]
    done = subprocess.run(
        [*cmd, str(unsigned), str(zsk[0])], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    signed_by = set(re.findall(r"RRSIG\s+\S+ 13 \d+ \d+ \(\s+\d+ \d+ (\d+) ", out.read_text()))
    assert signed_by == {str(made.ksks[0].tag), str(made.zsks[0].tag)}
    assert verify(out, csk=False).returncode == 0


@pytest.mark.parametrize("algorithm", ["ECDSAP256SHA256", "ED25519"])
def test_keys_from_dnssec_keygen_load_and_sign(tmp_path: Path, algorithm: str) -> None:
    made = []
    for extra in (["-f", "KSK"], []):
        done = subprocess.run(
            [tool("dnssec-keygen"), "-q", "-a", algorithm, *extra, "-K", str(tmp_path), ORIGIN],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        made.append(tmp_path / f"{done.stdout.strip()}.private")
    number = 13 if algorithm.startswith("ECDSA") else 15
    found = keys.load(made, ORIGIN, number, "ksk+zsk")
    assert [k.role for k in found.keys] == ["ksk", "zsk"]
    zone = sign.sign_zone(
        dns.name.from_text(ORIGIN), zone_rrsets(config()), found, NOW, sign.Policy(), "nsec3"
    )
    path = tmp_path / "signed.zone"
    path.write_text(zone.to_text())
    done = verify(path, csk=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert found.ksks[0].files is not None
    ds = found.ksks[0].ds()
    assert ds.digest.hex().upper() in _dsfromkey(found.ksks[0].files[0])


def test_no_private_material_in_repr_or_errors(tmp_path: Path) -> None:
    made = keys.ensure(tmp_path / "k", ORIGIN, 13, "csk")
    key = made.keys[0]
    assert key.files is not None
    secret = next(
        line.split(": ", 1)[1]
        for line in key.files[1].read_text().splitlines()
        if line.startswith("PrivateKey:")
    )
    assert secret not in repr(key)
    assert secret not in repr(made)
    assert secret not in str(key)
    assert repr(key) == f"SigningKey({ORIGIN} csk tag={key.tag} ECDSAP256SHA256)"
    # a private half of the wrong size, then one that is not the .key's
    text = key.files[1].read_text()
    key.files[1].write_text(text.replace(secret, secret[:-8] + "AAAAAAA="))
    with pytest.raises(keys.KeyFileError) as e:
        keys.read(key.files[0])
    assert secret[:-8] not in str(e.value)
    other = keys.write(keys.generate(ORIGIN, 13, 257, "csk"), tmp_path)
    assert other.files is not None
    key.files[1].write_text(other.files[1].read_text())
    with pytest.raises(keys.KeyFileError, match="is not the private half of"):
        keys.read(key.files[1])


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    made = keys.ensure(tmp_path / "k", ORIGIN, 15, "csk")
    files = made.keys[0].files
    assert files is not None
    os.chmod(files[1], 0o640)
    with pytest.raises(keys.KeyFileError, match=r"mode 0640\): chmod 600"):
        keys.read(files[0])
    os.chmod(files[1], 0o600)
    os.chmod(tmp_path / "k", 0o755)
    with pytest.raises(keys.KeyFileError, match="chmod 700"):
        keys.ensure(tmp_path / "k", ORIGIN, 15, "csk")


def test_another_algorithm_in_the_state_directory_is_not_rolled_silently(tmp_path: Path) -> None:
    keys.ensure(tmp_path / "k", ORIGIN, 13, "csk")
    with pytest.raises(keys.KeyFileError, match="algorithm rollover is not automatic"):
        keys.ensure(tmp_path / "k", ORIGIN, 15, "csk")
    assert len(list((tmp_path / "k").glob("*.private"))) == 1
