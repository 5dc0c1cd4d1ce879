"""A zone's `dnssec:` section: its defaults, and each mistake reported as
`FILE:LINE: key.path: message` (exit 2 from `validate`), key files judged by the loader the
signer uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dnssec_support import CONFIG, ORIGIN, tool

from dnsfailover.config.load import load
from dnsfailover.dnssec import keys
from dnsfailover.errors import ConfigError

BIN = str(Path(sys.executable).with_name("dnsfailover"))


def _write(tmp_path: Path, dnssec: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("dnssec: DNSSEC", f"dnssec:\n{dnssec}"))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(path)
    return [str(p) for p in e.value.problems]


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_defaults_and_spellings(tmp_path: Path) -> None:
    zone = load(_write(tmp_path, "      {}")).zones[ORIGIN]
    assert zone.dnssec is not None
    assert (zone.dnssec.algorithm, zone.dnssec.keys, zone.dnssec.denial) == (13, "csk", "nsec")
    policy = zone.dnssec.policy
    assert (policy.validity, policy.refresh, policy.inception_offset) == (14 * 86400, 0.25, 3600)
    section = (
        "      algorithm: ED25519\n      signature_validity: 21d\n      inception_offset: 2h\n"
    )
    zone = load(_write(tmp_path, section + "      denial: nsec3\n")).zones[ORIGIN]
    assert zone.dnssec is not None
    assert (zone.dnssec.algorithm, zone.dnssec.denial) == (15, "nsec3")
    assert zone.dnssec.policy.validity == 21 * 86400
    assert zone.dnssec.policy.inception_offset == 7200
    assert load(_write(tmp_path, "      algorithm: 13\n")).zones[ORIGIN].dnssec is not None


def test_an_unknown_algorithm_is_named_at_its_line_and_validate_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, "      algorithm: 8\n")
    line = _line(path, "algorithm: 8")
    done = subprocess.run([BIN, "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f'{path}:{line}: zones["example.test."].dnssec.algorithm: ' in done.stderr
    assert "unknown algorithm 8: use one of 13 (ECDSAP256SHA256), 15 (ED25519)" in done.stderr


def _keygen(directory: Path, algorithm: str, *extra: str, zone: str = ORIGIN) -> Path:
    done = subprocess.run(
        [tool("dnssec-keygen"), "-q", "-a", algorithm, *extra, "-K", str(directory), zone],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return directory / done.stdout.strip()


def test_key_files_are_read_relative_to_the_config(tmp_path: Path) -> None:
    ksk = _keygen(tmp_path, "ECDSAP256SHA256", "-f", "KSK")
    zsk = _keygen(tmp_path, "ECDSAP256SHA256")
    section = f"      keys: ksk+zsk\n      key_files: [{ksk.name}.private, {zsk.name}.key]\n"
    zone = load(_write(tmp_path, section)).zones[ORIGIN]
    assert zone.dnssec is not None
    assert zone.dnssec.key_paths == (tmp_path / f"{ksk.name}.private", tmp_path / f"{zsk.name}.key")
    found = keys.load(zone.dnssec.key_paths, ORIGIN, 13, "ksk+zsk")
    assert [k.role for k in found.keys] == ["ksk", "zsk"]


def test_each_key_file_mistake_is_reported_at_its_line(tmp_path: Path) -> None:
    good = _keygen(tmp_path, "ECDSAP256SHA256", "-f", "KSK")
    loose = _keygen(tmp_path, "ECDSAP256SHA256", "-f", "KSK")
    os.chmod(f"{loose}.private", 0o644)
    ed = _keygen(tmp_path, "ED25519", "-f", "KSK")
    other = _keygen(tmp_path, "ECDSAP256SHA256", "-f", "KSK", zone="other.test.")
    unreadable = _keygen(tmp_path, "ECDSAP256SHA256")
    Path(f"{unreadable}.private").unlink()
    Path(f"{unreadable}.private").mkdir(mode=0o700)
    entries = {
        "missing": "Kexample.test.+013+00001.key",
        "loose": f"{loose.name}.key",
        "ed": f"{ed.name}.key",
        "other": f"{other.name}.key",
        "unreadable": f"{unreadable.name}",
        "good": f"{good.name}.private",
    }
    section = "      key_files:\n" + "".join(f"        - {v}\n" for v in entries.values())
    path = _write(tmp_path, section)
    problems = _problems(path)
    where = 'zones["example.test."].dnssec.key_files'
    expected = {
        "missing": "cannot read",
        "loose": "is readable by its group or others (mode 0644): chmod 600",
        "ed": "algorithm 15 (ED25519), not the zone's 13 (ECDSAP256SHA256)",
        "other": "a key for other.test., not example.test.",
        "unreadable": "Is a directory",
    }
    for index, (name, message) in enumerate(expected.items()):
        line = _line(path, entries[name])
        prefix = f"{path}:{line}: {where}[{index}]: "
        assert any(p.startswith(prefix) and message in p for p in problems), (name, problems)
    assert not any(f"{where}[5]" in p for p in problems), "the good key is not reported"
    assert len(problems) == 5


def test_ksk_plus_zsk_needs_both_roles(tmp_path: Path) -> None:
    zsk = _keygen(tmp_path, "ED25519")
    path = _write(
        tmp_path, f"      algorithm: 15\n      keys: ksk+zsk\n      key_files: [{zsk.name}]\n"
    )
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:{_line(path, 'key_files')}: ")
    assert "needs a KSK (flags 257: dnssec-keygen -f KSK)" in problem


@pytest.mark.parametrize(
    ("provider", "options"),
    [("route53", "{hosted_zone_id: Z123}"), ("rfc2136", "{server: 127.0.0.1, port: 53}")],
)
def test_a_zone_another_platform_publishes_is_not_ours_to_sign(
    tmp_path: Path, provider: str, options: str
) -> None:
    text = f"""\
zones:
  example.test.:
    provider: {provider}
    options: {options}
    dnssec: {{algorithm: 13}}
"""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    problems = _problems(path)
    line = _line(path, "dnssec:")
    mine = [p for p in problems if p.startswith(f'{path}:{line}: zones["example.test."].dnssec: ')]
    assert len(mine) == 1, problems
    assert f"provider '{provider}' publishes this zone: their platform signs it" in mine[0]
    assert "see docs/dnssec.md" in mine[0]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("refresh: 1.5", "less than 1"),
        ("signature_validity: 10m", "must be at least 3600"),
        ("keys: zsk", "'csk' or 'ksk+zsk'"),
        ("denial: nsec5", "'nsec' or 'nsec3'"),
    ],
)
def test_field_mistakes(tmp_path: Path, setting: str, message: str) -> None:
    path = _write(tmp_path, f"      {setting}\n")
    (problem,) = _problems(path)
    key = setting.split(":")[0]
    assert problem.startswith(f'{path}:{_line(path, setting)}: zones["example.test."].dnssec.{key}')
    assert message in problem


def test_rollover_settings_and_their_defaults(tmp_path: Path) -> None:
    section = load(_write(tmp_path, "      {}")).zones[ORIGIN].dnssec
    assert section is not None
    assert (section.dnskey_ttl, section.zsk_lifetime, section.propagation_delay) == (
        3600,
        90 * 86400,
        3600,
    )
    assert (section.parent_ds_ttl, section.cds) == (86400, True)
    assert section.zsk_rollover is None  # keys: csk has no ZSK to roll
    text = (
        "      keys: ksk+zsk\n      zsk_lifetime: 30d\n      propagation_delay: 5m\n"
        "      dnskey_ttl: 300\n      cds: false\n"
    )
    section = load(_write(tmp_path, text)).zones[ORIGIN].dnssec
    assert section is not None
    policy = section.zsk_rollover
    assert policy is not None
    assert (policy.zsk_lifetime, policy.propagation, policy.validity) == (
        30 * 86400,
        300,
        14 * 86400,
    )
    assert section.cds is False
    for never in ("0", "null"):
        text = f"      keys: ksk+zsk\n      zsk_lifetime: {never}\n"
        off = load(_write(tmp_path, text)).zones[ORIGIN].dnssec
        assert off is not None
        assert off.zsk_rollover is None
        assert off.rollover.zsk_lifetime is None


def test_key_files_keys_never_roll_by_themselves(tmp_path: Path) -> None:
    ksk = _keygen(tmp_path, "ECDSAP256SHA256", "-f", "KSK")
    zsk = _keygen(tmp_path, "ECDSAP256SHA256")
    section = f"      keys: ksk+zsk\n      key_files: [{ksk.name}, {zsk.name}]\n"
    zone = load(_write(tmp_path, section)).zones[ORIGIN]
    assert zone.dnssec is not None
    assert zone.dnssec.zsk_rollover is None  # their times come from the files


def test_a_zsk_lifetime_shorter_than_its_pre_publication_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "      keys: ksk+zsk\n      zsk_lifetime: 1h\n")
    (problem,) = _problems(path)
    assert problem.startswith(f'{path}:{_line(path, "dnssec:")}: zones["example.test."].dnssec')
    assert "zsk_lifetime (3600s) must be longer than dnskey_ttl + propagation_delay" in problem


CLUSTER = 'cluster:\n  etcd: {endpoints: ["127.0.0.1:2379"], prefix: /dnsfailover/test}\n'


def test_in_a_cluster_keys_must_be_listed_not_generated(tmp_path: Path) -> None:
    path = _write(tmp_path, "      {}")
    path.write_text(path.read_text() + CLUSTER)
    (problem,) = _problems(path)
    assert problem.startswith(f'{path}:{_line(path, "dnssec:")}: zones["example.test."].dnssec: ')
    assert "in a cluster every node must sign with the same keys: generate them once" in problem
    assert "list them in key_files on every node" in problem
    ksk = _keygen(tmp_path, "ECDSAP256SHA256", "-f", "KSK")
    path = _write(tmp_path, f"      key_files: [{ksk.name}]\n")
    path.write_text(path.read_text() + CLUSTER)
    assert load(path).cluster is not None
