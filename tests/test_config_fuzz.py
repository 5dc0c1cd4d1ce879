"""Config files from anywhere: whatever the input, loading ends in a config or in problems
located as FILE:LINE, within a few seconds and bounded memory, never in a traceback.

Hostile inputs (what a fuzz of `dnsfailover validate` found: deep nesting, huge numbers,
alias bombs, devices and FIFOs, huge files) through `load` and through the real command,
then a few hundred seeded mutations of the example configs through `load`.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dnsfailover.config.load import load
from dnsfailover.errors import ConfigError, Problem

CONFIGS = Path(__file__).resolve().parent.parent / "config"
EXAMPLE = (CONFIGS / "example.yaml").read_text()
BOUND = 15.0  # seconds per input: about 5x the slowest case here (10^6 values, ~2.5 s)
BUG = "please report it as a bug"  # the loader's last resort: must never be needed
END = EXAMPLE.count("\n") + 1  # the line of what is appended to the example


def line_of(fragment: str) -> int:
    """The example's line that holds `fragment`."""
    return EXAMPLE[: EXAMPLE.index(fragment)].count("\n") + 1


Make = Callable[[Path], Path]


def bomb(levels: int) -> str:
    """A "billion laughs": `levels` anchors, each a list of ten aliases of the one before."""
    lines = ["lol:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def text(content: str) -> Make:
    def make(tmp: Path) -> Path:
        path = tmp / "c.yaml"
        path.write_text(content)
        return path

    return make


def fifo(tmp: Path) -> Path:
    path = tmp / "c.yaml"
    os.mkfifo(path)
    return path


def sparse_50mb(tmp: Path) -> Path:
    path = tmp / "c.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    return path


def directory(tmp: Path) -> Path:
    path = tmp / "c.yaml"
    path.mkdir()
    return path


def device(name: str) -> Make:
    return lambda _tmp: Path(name)


# input → (line of the problem or None for the file itself, what the message says)
HOSTILE: dict[str, tuple[Make, int | None, str]] = {
    "FIFO": (fifo, None, "cannot read: not a regular file (a FIFO)"),
    "/dev/zero": (device("/dev/zero"), None, "not a regular file (a character device)"),
    "/dev/urandom": (device("/dev/urandom"), None, "not a regular file (a character device)"),
    "directory": (directory, None, "not a regular file (a directory)"),
    "50 MB file": (sparse_50mb, None, "larger than the 32 MiB limit (52,428,800 bytes"),
    "flow nesting 5,000 deep": (
        text(EXAMPLE + "deep: " + "[" * 5000 + "]" * 5000 + "\n"),
        END,
        "nested deeper than 64 levels",
    ),
    "block nesting 5,000 deep": (
        text(EXAMPLE + "deep:\n" + "- " * 5000 + "x\n"),
        END + 1,
        "nested deeper than 64 levels",
    ),
    "mapping nesting 100 deep": (
        text(EXAMPLE + "".join(f"{'  ' * i}k{i}:\n" for i in range(100))),
        END + 64,
        "nested deeper than 64 levels",
    ),
    "5,000-digit integer": (
        text(EXAMPLE.replace("rise: 2 ", "rise: " + "9" * 5000 + " ")),
        line_of("rise: 2 "),
        "a number of 5,000 digits; at most 100",
    ),
    "explicit !!int of 5,000 digits": (
        text(EXAMPLE.replace("rise: 2 ", "rise: !!int " + "9" * 5000 + " ")),
        line_of("rise: 2 "),
        "cannot read tag:yaml.org,2002:int",
    ),
    "huge duration": (
        text(EXAMPLE.replace("interval: 1s ", "interval: " + "9" * 400 + " ")),
        line_of("interval: 1s "),
        "a number of 400 digits; at most 100",
    ),
    "huge duration string": (
        text(EXAMPLE.replace("interval: 1s ", "interval: " + "9" * 400 + "s ")),
        line_of("interval: 1s "),
        "a duration must be a finite number of seconds",
    ),
    "alias bomb": (text(EXAMPLE + bomb(9)), END + 4, "is it an alias bomb?"),
    "alias bomb first": (
        text(bomb(12) + EXAMPLE.replace("values: [127.0.0.1]", "values: *a11")),
        5,  # refused at its fourth anchor, long before anything uses it
        "aliases expand to 11,219 values, more than 10 times what the file writes (16)",
    ),
    "alias inside its own anchor": (
        text(EXAMPLE + "loop: &loop [a, *loop]\n"),
        END,
        "alias 'loop' refers to a mapping or list it is inside",
    ),
    "10^6 list items": (
        text(EXAMPLE + "many: [" + ",".join(["1"] * 1_000_000) + "]\n"),
        END,
        "more than 1,000,000 values (aliases expanded); put large record sets in a zone_file",
    ),
    "a 30 MB value": (
        text(EXAMPLE.replace("values: [127.0.0.1]", "values: [" + "x" * 30_000_000 + "]")),
        line_of("values: [127.0.0.1]"),
        "a value of 30,000,000 characters; at most 1,048,576",
    ),
    "bad !!binary": (text(EXAMPLE + "b: !!binary 'a'\n"), END, "failed to decode base64 data"),
    "bad !!timestamp": (text(EXAMPLE + "t: !!timestamp 2001-99-99\n"), END, "cannot read tag"),
}


@pytest.mark.parametrize(("make", "line", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_is_a_located_problem_within_a_bound(
    tmp_path: Path, make: Make, line: int | None, message: str
) -> None:
    path = make(tmp_path)
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load(path)
    took = time.monotonic() - started
    assert took < BOUND, f"{took:.1f}s"
    first = info.value.problems[0]
    assert (first.file, first.line) == (str(path), line), str(first)
    assert message in first.message, str(first)


def test_a_zone_file_that_is_a_fifo_or_a_device_is_refused(tmp_path: Path) -> None:
    """Zone files are read bounded too: a FIFO would block the loader, /dev/zero fill it."""
    os.mkfifo(tmp_path / "zone.fifo")
    for zone_file in (str(tmp_path / "zone.fifo"), "/dev/zero"):
        config = EXAMPLE.replace("    records:\n", f"    zone_file: {zone_file}\n    records:\n")
        with pytest.raises(ConfigError) as info:
            load(text(config)(tmp_path))
        (problem,) = info.value.problems
        assert problem.file == zone_file
        assert "cannot read zone file" in problem.message
        assert "not a regular file" in problem.message


def test_non_finite_numbers_are_refused_everywhere(tmp_path: Path) -> None:
    """Not only durations: no setting takes `.inf` or `.nan`."""
    config = EXAMPLE + "server: {rrl: {responses_per_second: .nan, window: .inf}}\n"
    path = text(config)(tmp_path)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert [(p.line, p.path, p.message) for p in info.value.problems] == [
        (END, "server.rrl.responses_per_second", "expected a finite number, got nan"),
        (END, "server.rrl.window", "a duration must be a finite number of seconds, got inf"),
    ]


def test_limits_leave_room_for_big_real_configs(tmp_path: Path) -> None:
    """The limits refuse bombs, not big configs: 20,000 static records, and 2,000 names
    that share one record's settings and endpoints through anchors, load."""
    records = "".join(f"      r{i}: {{type: TXT, values: ['record {i}']}}\n" for i in range(20_000))
    names = (
        "      n0: &name {policy: active-active, check: web, endpoints: &pool [127.0.0.51, "
        "127.0.0.52, 127.0.0.53, 127.0.0.54]}\n"
        + "".join(f"      n{i}: {{<<: *name, ttl: 60}}\n" for i in range(1, 1_000))
        + "".join(
            f"      m{i}: {{policy: active-active, check: web, endpoints: *pool}}\n"
            for i in range(1_000)
        )
    )
    config = EXAMPLE.replace("    records:\n", "    records:\n" + records).replace(
        "    failover:\n", "    failover:\n" + names
    )
    started = time.monotonic()
    loaded = load(text(config)(tmp_path))
    assert time.monotonic() - started < BOUND
    assert len(loaded.managed()) == 2_000 + 2


def problem_shape(problem: Problem, path: Path) -> bool:
    """FILE:LINE for anything in the file; only the file's own problems have no line."""
    if problem.file != str(path) or BUG in problem.message:
        return False
    return problem.line is not None or problem.message.startswith(
        ("empty config", "cannot read", "TSIG key", "api.")
    )


@pytest.mark.parametrize(
    ("case", "args", "says"),
    [
        ("fifo", (), "not a regular file (a FIFO)"),
        ("bomb", (), "is it an alias bomb?"),
        ("deep", (), "nested deeper than 64 levels"),
        ("bigint", (), "a number of 5,000 digits"),
        ("inf", (), "a duration must be a finite number of seconds"),
        ("region", ("--region", "nowhere"), "the config declares no regions"),
    ],
)
def test_the_command_exits_2_with_located_problems(
    tmp_path: Path, case: str, args: tuple[str, ...], says: str
) -> None:
    """Through the real `dnsfailover validate` (and `serve` for `--region`): exit 2,
    `FILE:LINE: ...` lines, no traceback, and for `serve` no state file."""
    contents = {
        "bomb": EXAMPLE + bomb(9),
        "deep": EXAMPLE + "deep: " + "[" * 5000 + "]" * 5000 + "\n",
        "bigint": EXAMPLE.replace("rise: 2 ", "rise: " + "9" * 5000 + " "),
        "inf": EXAMPLE.replace("interval: 1s ", "interval: .inf "),
        "region": EXAMPLE,
    }
    path = fifo(tmp_path) if case == "fifo" else text(contents[case])(tmp_path)
    state = tmp_path / "state.db"
    command = (
        ["serve", str(path), "--dns", "127.0.0.1:0", "--api", "off", "--state", str(state)]
        if args
        else ["validate", str(path)]
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "dnsfailover.cli.main", *command, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert time.monotonic() - started < BOUND + 5
    assert out.returncode == 2, out.stdout + out.stderr
    assert says in out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines
    located = re.compile(rf"^(error: --region|{re.escape(str(path))}(:\d+)?: )")
    assert all(located.match(line) for line in lines), out.stderr
    assert not state.exists()


NASTY = [
    ".inf", ".nan", "-.inf", "1.0e400", "0x1F90", "0o17", "2:14:40", "1_000", "017", "-1",
    "9" * 120, "~", "null", "yes", "[", "]", "{", "}", "*nosuch", "&a", "!!python/object:os.system",
    "!!int x", "!!float y", "!!binary ===", "'unterminated", '"\\x"', "\t", "- ", ": ", "<<: *a",
    "%YAML 1.1", "---", "...", "@", "`", "|", ">", "? ", "#", "\u2028", "a" * 300, "/(a+)+$/",
    "/(a)\\1/", "1000000", "0", "-0", "99999999999999999999s", "1e999s", "NaNs", "\ufeff",
    "[[[[[[[[", "*a", "&x [*x]",
]  # fmt: skip


def mutate(rng: random.Random, source: str) -> str:
    lines = source.splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        op = rng.randrange(6)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2 and ": " in lines[i]:  # replace a value
            key = lines[i].split(": ", 1)[0]
            lines[i] = f"{key}: {rng.choice(NASTY)}\n"
        elif op == 3:  # insert a token at a random column
            line = lines[i]
            col = rng.randrange(len(line) + 1)
            lines[i] = line[:col] + rng.choice(NASTY) + line[col:]
        elif op == 4:  # re-indent
            lines[i] = " " * rng.randrange(12) + lines[i].lstrip(" ")
        else:  # an anchor here, an alias there
            lines[i] = lines[i].replace(": ", ": &a ", 1)
            j = rng.randrange(len(lines))
            lines[j] = lines[j].replace(": ", ": *a ", 1)
        if not lines:
            lines = ["\n"]
    return "".join(lines)


def test_seeded_mutations_of_the_examples_load_or_are_located_problems(tmp_path: Path) -> None:
    """400 mutations (seeded: a failure names its seed) of each example config."""
    sources = [p.read_text() for p in sorted(CONFIGS.glob("*.yaml"))]
    path = tmp_path / "c.yaml"
    outcomes = {"ok": 0, "problems": 0}
    started = time.monotonic()
    for seed in range(400):
        rng = random.Random(seed)
        content = mutate(rng, sources[seed % len(sources)])
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
        one = time.monotonic()
        try:
            load(path)
        except ConfigError as e:
            bad = [str(p) for p in e.problems if not problem_shape(p, path)]
            assert not bad, f"seed {seed}: {bad}\n{content}"
            outcomes["problems"] += 1
        else:
            outcomes["ok"] += 1
        assert time.monotonic() - one < BOUND, f"seed {seed}"
    assert outcomes["problems"] > 100, outcomes  # the mutations do hit
    assert time.monotonic() - started < 60
