"""The command's habits (issue 18 item 8), through the real `dnsfailover` command: shell
completion, the man page, `--json` on validate and plan, `plan --detailed-exitcode`, a closed
pipe, a misspelt `policy:`, one meaning for "mode", $DNSFAILOVER_CONFIG and the examples."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from support import BIN, HttpEndpoints

from dnsfailover.cli.habits import EXAMPLES, subcommands
from dnsfailover.cli.main import build_parser

EXAMPLE = Path(__file__).parents[1] / "config" / "example.yaml"
COMMANDS = sorted(subcommands(build_parser()))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command with exactly `env` added to a copy of ours minus $DNSFAILOVER_CONFIG."""
    base = {k: v for k, v in os.environ.items() if k != "DNSFAILOVER_CONFIG"}
    return subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def config(tmp_path: Path, port: int, zone: str = "", *, key: str = "policy") -> Path:
    """One zone with one active-active name on 127.0.0.41 (`key` is how `policy` is spelt)."""
    head = zone or (
        "example.test.:\n    provider: embedded\n"
        "    soa: {mname: ns1.example.net., rname: hostmaster.example.test.}\n"
        "    nameservers: [ns1.example.net.]"
    )
    path = tmp_path / "c.yaml"
    path.write_text(f"""\
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: 1s, timeout: 500ms}}
zones:
  {head}
    failover:
      www:
        type: A
        {key}: active-active
        check: web
        endpoints: [127.0.0.41]
""")
    return path


# -- completion and man ---------------------------------------------------------------------


def bash_complete(script: Path, *words: str) -> list[str]:
    """What the generated completion offers for `words` (the last one being typed), asked of a
    real bash that sourced it."""
    line = " ".join(shlex.quote(w) for w in words)
    program = (
        f"source {shlex.quote(str(script))}\n"
        "complete -p dnsfailover\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n"
        "_dnsfailover\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    first, *offered = out.stdout.splitlines()
    assert first == "complete -o filenames -F _dnsfailover dnsfailover"
    return offered


def test_bash_completion_completes_commands_options_and_values(tmp_path: Path) -> None:
    out = cli("completion", "bash")
    assert out.returncode == 0, out.stderr
    script = tmp_path / "dnsfailover.bash"
    script.write_text(out.stdout)
    assert bash_complete(script, "dnsfailover", "va") == ["validate"]
    assert sorted(bash_complete(script, "dnsfailover", "")) == sorted(
        [*COMMANDS, "-h", "--help", "--version", "--debug", "--log-level", "--log-format"]
    )
    # a top-level option's value is not taken for the command
    offered = bash_complete(script, "dnsfailover", "--log-level", "INFO", "plan", "--de")
    assert offered == ["--debug", "--detailed-exitcode"]
    assert bash_complete(script, "dnsfailover", "serve", "--probes", "") == ["process", "inline"]
    assert bash_complete(script, "dnsfailover", "completion", "") == ["bash", "zsh"]
    # CONFIG completes file names
    (tmp_path / "prod.yaml").write_text("")
    offered = bash_complete(script, "dnsfailover", "validate", str(tmp_path / "pro"))
    assert offered == [str(tmp_path / "prod.yaml")]


def zsh_complete(fpath: Path, typed: str, shown: str) -> bool:
    """Type `typed` and TAB in an interactive zsh whose $fpath has the generated `_dnsfailover`
    and wait until its terminal shows the pattern `shown`."""
    program = f"""\
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='> '; fpath=({shlex.quote(str(fpath))} \\$fpath); autoload -U compinit; \\
compinit -u -D; print READY"
zpty -r z line '*READY*'
zpty -w -n z {shlex.quote(typed + chr(9))}
zpty -r z out {shlex.quote(shown)}
zpty -d z
print FOUND
"""
    out = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and out.stdout.endswith("FOUND\n")


def test_zsh_completion_is_valid_zsh_and_registers_for_the_command(tmp_path: Path) -> None:
    out = cli("completion", "zsh")
    assert out.returncode == 0, out.stderr
    (tmp_path / "_dnsfailover").write_text(out.stdout)
    assert out.stdout.startswith("#compdef dnsfailover\n")
    program = (
        f"fpath=({shlex.quote(str(tmp_path))} $fpath)\n"
        f"autoload -U compinit && compinit -u -d {shlex.quote(str(tmp_path / 'zcompdump'))}\n"
        "print -r -- $_comps[dnsfailover]\n"
    )
    check = subprocess.run(["zsh", "-n", str(tmp_path / "_dnsfailover")], capture_output=True)
    assert check.returncode == 0, check.stderr
    run = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "_dnsfailover"
    # a real interactive zsh (on a pseudo-terminal) completes with it; each read waits for
    # what the completion must show (never there: the subprocess times out)
    assert zsh_complete(tmp_path, "dnsfailover plan --de", "*--detailed-exitcode*")
    assert zsh_complete(tmp_path, "dnsfailover completion ", "*bash*zsh*")
    assert zsh_complete(tmp_path, "dnsfailover --log-level ", "*DEBUG*ERROR*")
    for name in COMMANDS:
        assert f"\n        '{name}:" in out.stdout
        assert f"\n                {name}) _arguments " in out.stdout


def test_man_page_renders_with_every_command(tmp_path: Path) -> None:
    out = cli("man")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(".TH DNSFAILOVER 1 ")
    rendered = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P", "-cbou"],  # warnings on, plain text
        input=out.stdout,
        capture_output=True,
        text=True,
    )
    assert rendered.returncode == 0
    assert rendered.stderr == ""  # no roff warning
    text = rendered.stdout
    for section in ("NAME", "SYNOPSIS", "COMMANDS", "ENVIRONMENT", "EXIT STATUS"):
        assert f"\n{section}\n" in text
    for name in COMMANDS:
        assert f"\n   {name}\n" in text, name
        assert f"dnsfailover {name} [-h]" in " ".join(text.split())
    assert "--detailed-exitcode" in text
    assert "DNSFAILOVER_CONFIG" in text


# -- examples in --help -----------------------------------------------------------------------


def test_every_command_has_examples_that_parse() -> None:
    parser = build_parser()
    assert "examples:\n  # check a config\n  dnsfailover validate" in parser.format_help()
    for name, sp in subcommands(parser).items():
        assert name in EXAMPLES, f"{name} has no examples"
        assert "\nexamples:\n" in sp.format_help(), name
        for line, _ in EXAMPLES[name]:
            words = shlex.split(line.split("|")[0].split(">")[0].strip(" )").split("<(")[-1])
            while "=" in words[0]:  # VAR=value before the command
                words = words[1:]
            assert words[:2] == ["dnsfailover", name], line
            parser.parse_args(words[1:])  # exits (fails the test) if it is wrong


def test_help_shows_the_examples() -> None:
    out = cli("plan", "--help")
    assert out.returncode == 0
    assert out.stdout.endswith(
        "examples:\n"
        "  # probe once; show answers and provider changes\n"
        "  dnsfailover plan config/example.yaml\n"
        "  # the same as JSON: changes per zone\n"
        "  dnsfailover plan config/example.yaml --json\n"
        "  # exit 0 no changes, 2 changes, 1 error (as terraform)\n"
        "  dnsfailover plan config/example.yaml --detailed-exitcode\n"
    )


# -- $DNSFAILOVER_CONFIG ------------------------------------------------------------------------


def test_the_config_comes_from_the_environment(tmp_path: Path) -> None:
    env = {"DNSFAILOVER_CONFIG": str(EXAMPLE)}
    out = cli("validate", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{EXAMPLE}: ok (1 zone(s)")
    out = cli("simulate", "--down", "127.0.0.11", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["down"] == ["127.0.0.11"]
    # a CONFIG given wins over the environment
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: 5\n")
    out = cli("validate", str(bad), env=env)
    assert out.returncode == 2
    assert out.stderr.startswith(f"{bad}:1: zones: ")


@pytest.mark.parametrize("command", ["validate", "plan", "apply", "simulate", "serve", "drill"])
def test_neither_config_nor_environment_is_a_usage_error(command: str) -> None:
    extra = ["--tier", "x"] if command == "drill" else []
    out = cli(command, *extra, env={"DNSFAILOVER_CONFIG": ""})
    assert out.returncode == 2
    assert out.stderr.startswith(f"usage: dnsfailover {command} ")
    assert out.stderr.endswith(
        f"dnsfailover {command}: error: CONFIG is required: give the config file's path "
        "or set DNSFAILOVER_CONFIG\n"
    )
    assert "Traceback" not in out.stderr


# -- validate --json and a misspelt discriminator ----------------------------------------------


def test_validate_json_ok_and_problems(tmp_path: Path) -> None:
    out = cli("validate", str(EXAMPLE), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["valid"] is True
    assert data["problems"] == []
    assert (data["zones"], data["managed_names"]) == (1, 2)

    cfg = config(tmp_path, 8080, key="polcy")
    out = cli("validate", str(cfg), "--json")
    assert out.returncode == 2
    assert out.stderr == ""
    data = json.loads(out.stdout)
    assert data["valid"] is False
    assert data["problems"] == [
        {
            "file": str(cfg),
            "line": 11,
            "path": 'zones["example.test."].failover.www.polcy',
            "message": "unknown key 'polcy'; did you mean 'policy'?",
        }
    ]


def test_a_misspelt_policy_key_is_named_at_its_line(tmp_path: Path) -> None:
    cfg = config(tmp_path, 8080, key="polciy")
    out = cli("validate", str(cfg))
    assert out.returncode == 2
    assert out.stderr == (
        f'{cfg}:11: zones["example.test."].failover.www.polciy: '
        "unknown key 'polciy'; did you mean 'policy'?\n"
    )
    # no key like it: still the missing key, at the record
    cfg = config(tmp_path, 8080, key="flavour")
    out = cli("validate", str(cfg))
    assert out.returncode == 2
    assert out.stderr == (
        f'{cfg}:9: zones["example.test."].failover.www: '
        "missing required key 'policy' (active-active or active-passive)\n"
    )


# -- plan --json and --detailed-exitcode --------------------------------------------------------


def route53(moto: str) -> str:
    return f"r53.example.test.:\n    provider: route53\n    options: {{endpoint_url: {moto}}}"


def test_plan_without_external_zones_has_no_changes(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    cfg = config(tmp_path, http_endpoints.start("127.0.0.41"))
    with cfg.open("a") as f:
        f.write("      api: {type: A, policy: active-active, check: web, mode: shadow,\n"
                "            endpoints: [127.0.0.41]}\n")  # fmt: skip
    state = str(tmp_path / "s.db")
    out = cli("plan", str(cfg), "--state", state, "--detailed-exitcode")
    assert out.returncode == 0, out.stderr
    # "mode" is only the policy mode: a name's decision is its health
    assert "www.example.test. active-active health=healthy -> 127.0.0.41\n" in out.stdout
    assert "api.example.test. active-active health=healthy mode=shadow -> " in out.stdout
    out = cli("plan", str(cfg), "--state", state, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["zones"] == []
    assert data["changes"] == 0
    name, shadow = sorted(data["names"], key=lambda n: n["name"] != "www.example.test.")
    assert (shadow["name"], shadow["policy_mode"]) == ("api.example.test.", "shadow")
    assert name["health"] == "healthy"
    assert name["policy_mode"] == "live"
    assert name["answer"] == ["127.0.0.41"]
    assert [p["result"] for p in data["probes"]] == ["ok"]


def test_plan_json_and_detailed_exitcode_with_changes(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cfg = config(tmp_path, http_endpoints.start("127.0.0.41"), route53(moto_endpoint))
    state = str(tmp_path / "s.db")

    # no hosted zone yet: an error, 1 (never 2, which means "changes")
    out = cli("plan", str(cfg), "--state", state, "--detailed-exitcode")
    assert out.returncode == 1, out.stdout + out.stderr
    out = cli("plan", str(cfg), "--state", state, "--json")
    assert out.returncode == 1
    [zone] = json.loads(out.stdout)["zones"]
    assert zone["error"]

    client = boto3.client("route53", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_hosted_zone(Name="r53.example.test.", CallerReference="habits")
    out = cli("plan", str(cfg), "--state", state, "--detailed-exitcode")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "+ www.r53.example.test. A 127.0.0.41" in out.stdout
    out = cli("plan", str(cfg), "--state", state, "--json", "--detailed-exitcode")
    assert out.returncode == 2, out.stderr
    data = json.loads(out.stdout)
    assert data["changes"] == 1
    assert data["zones"] == [
        {
            "zone": "r53.example.test.",
            "provider": "route53",
            "changes": [
                {
                    "action": "create",
                    "name": "www.r53.example.test.",
                    "type": "A",
                    "place": None,
                    "before": None,
                    "after": {"ttl": 30, "values": ["127.0.0.41"]},
                }
            ],
            "counts": {"create": 1, "update": 0, "delete": 0},
            "unsafe": [],
            "error": None,
        }
    ]
    # without the flag a plan with changes is a success
    assert cli("plan", str(cfg), "--state", state).returncode == 0


def test_plan_detailed_exitcode_config_error_is_1(tmp_path: Path) -> None:
    cfg = config(tmp_path, 8080, key="polcy")
    out = cli("plan", str(cfg), "--detailed-exitcode")
    assert out.returncode == 1
    assert "unknown key 'polcy'" in out.stderr
    assert cli("plan", str(cfg)).returncode == 2
    # a usage error too: 2 would read as "changes"
    out = cli("plan", str(cfg), "--detailed-exitcode", "--no-such-option")
    assert (out.returncode, out.stderr.splitlines()[-1]) == (
        1,
        "dnsfailover: error: unrecognized arguments: --no-such-option",
    )
    assert cli("plan", "--detailed-exitcode").returncode == 1  # no CONFIG at all
    assert cli("plan", "--no-such-option").returncode == 2


# -- a closed pipe ------------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly_without_a_traceback() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, as after `| head -1`
    try:
        proc = subprocess.run(
            [str(BIN), "simulate", str(EXAMPLE), "--down", "127.0.0.11", "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == -signal.SIGPIPE  # as a C tool: the shell shows 141


def test_head_1_ends_a_long_output_quietly(tmp_path: Path) -> None:
    """`simulate --json | head -1` in a real shell, with more output than the pipe holds."""
    names = "".join(
        f"      n{i}: {{type: A, policy: active-active, check: web, "
        f"endpoints: [127.0.1.{i % 250 + 1}]}}\n"
        for i in range(1500)
    )
    cfg = config(tmp_path, 8080).read_text().split("    failover:\n")[0]
    big = tmp_path / "big.yaml"
    big.write_text(f"{cfg}    failover:\n{names}")
    command = f"set -o pipefail; {shlex.quote(str(BIN))} simulate {big} --json | head -1"
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert out.stdout == "{\n"
    assert out.stderr == ""
    assert out.returncode == 128 + signal.SIGPIPE, out
