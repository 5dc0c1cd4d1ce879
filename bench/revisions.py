"""Two builds of dnsfailover measured in interleaved rounds: does a change regress?

    .venv/bin/python bench/revisions.py --base main [--rounds 5] [--cycles 20] [--seconds 5]
        [--skip-qps] [--skip-failover] [--scale] [--cluster]

Checks `--base` (any git revision) out into a temporary worktree, reusing this checkout's
compiled UDP extension when the C source is the same, and runs both builds' `dnsfailover
serve` from this venv.  Each round runs base, then this checkout, so the shared machine's
noise hits both alike:

- failover: `bench/failover_latency.py --cycles N` (an endpoint killed → the answer drops
  it; restored → back), the median of each run;
- qps: dnsperf against `serve` with the default UDP thread (`bench/dns_qps.py`'s run, server
  on core 0), QPS and server CPU per query;
- with `--scale`: `bench/scale.py --cycles 5` (100k records, 10k names): one endpoint's
  names changing (median) and the last name of a 500-endpoint outage;
- with `--cluster`: `bench/scale_cluster.py --interval 100ms --cycles N` (the same zone on
  three nodes and one etcd): the median and p99 until all three serve the change, and the
  start-up until all three answer.  Both builds run with this checkout's bench scripts
  (its endpoints, its resolver).

Prints every round and the median of the per-round ratios (this / base).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from dns_qps import Listeners, machine, run_ours  # noqa: E402

# The editable install's import hook would find this checkout's code first: drop it, so
# PYTHONPATH (the base worktree) decides.
LAUNCH = """\
import sys
sys.meta_path[:] = [
    f for f in sys.meta_path
    if not (getattr(f, "__module__", "") or type(f).__module__).startswith(
        "__editable___dnsfailover_0"
    )
]
try:
    from dnsfailover.cli.main import main
except ImportError:  # before the cli/ package
    from dnsfailover.cli import main
sys.exit(main())
"""


def compile_extension(tree: Path, sources: list[str]) -> None:
    target = tree / "dnsfailover/server" / f"_mmsg{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(
        [sysconfig.get_config_var("CC").split()[0], "-shared", "-fPIC", "-O2", "-std=gnu11",
         f"-I{sysconfig.get_paths()['include']}", *(str(tree / c) for c in sources),
         "-o", str(target)],
        check=True,
    )  # fmt: skip


def base_build(revision: str, tmp: Path) -> Path:
    """A `dnsfailover` executable running `revision`'s code with this venv's packages."""
    tree = tmp / "base"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision],
        check=True,
    )
    sources = ["dnsfailover/server/_mmsg.c", "dnsfailover/server/_hits.c"]
    same_c = all(
        (tree / c).exists() == (ROOT / c).exists()
        and (not (tree / c).exists() or (tree / c).read_bytes() == (ROOT / c).read_bytes())
        for c in sources
    )
    built = list((ROOT / "dnsfailover/server").glob("_mmsg*.so"))
    if same_c and built:
        shutil.copy(built[0], tree / "dnsfailover/server" / built[0].name)
    else:  # the base's own extension, built as setup.py builds it
        compile_extension(tree, [c for c in sources if (tree / c).exists()])
    # Its own entry points (the `embedded` provider moved), found before this venv's.
    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    info = tree / "dnsfailover-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dnsfailover\nVersion: 0.0.0\n")
    groups = project.get("entry-points", {})
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
            for group, points in groups.items()
        )
    )
    launcher = tmp / "dnsfailover-base"
    launcher.write_text(
        # -P: `-c` would put the current directory first on sys.path, and run from a
        # checkout that is this checkout's code, not the base's.
        f"#!/bin/sh\nPYTHONPATH={tree} exec {sys.executable} -P -c '{LAUNCH}' \"$@\"\n"
    )
    launcher.chmod(0o755)
    # The base's code, not this checkout's, whatever the current directory is.
    check = LAUNCH.split("try:")[0] + "import dnsfailover\nprint(dnsfailover.__file__)\n"
    where = subprocess.run(
        [sys.executable, "-P", "-c", check], env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(tree)):
        raise SystemExit(f"the base build imports {where}, not {tree}")
    return launcher


def failover(binary: Path, cycles: int) -> tuple[float, float]:
    """Medians (ms) of kill → changed and restore → back, from one failover_latency run."""
    out = subprocess.run(
        [sys.executable, str(HERE / "failover_latency.py"), "--cycles", str(cycles)],
        env={**os.environ, "DNSFAILOVER_BIN": str(binary)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.findall(r"median\s+(\d+) ms", out)
    if len(found) != 2:
        raise SystemExit(f"unexpected failover_latency output:\n{out}")
    return float(found[0]), float(found[1])


def scale(binary: Path) -> tuple[float, float, float]:
    """One `scale.py --cycles 5` run: the median ms of one endpoint's names changing, the
    seconds until the last name of a 500-endpoint outage is right, and the idle CPU (% of a
    core, the node's processes together) while probing 1,000 endpoints."""
    out = subprocess.run(
        [sys.executable, str(HERE / "scale.py"), "--cycles", "5"],
        env={**os.environ, "DNSFAILOVER_BIN": str(binary)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    change = re.search(r"names changed: median (\d+) ms", out)
    outage = re.search(r"answered without them after ([\d.]+) s", out)
    idle = re.search(r"endpoints[^)]*\): (\d+)% of a core", out)
    if change is None or outage is None or idle is None:
        raise SystemExit(f"unexpected scale output:\n{out}")
    return float(change[1]), float(outage[1]), float(idle[1])


def cluster(binary: Path, cycles: int) -> tuple[float, float, float]:
    """One `scale_cluster.py --interval 100ms` run: the median and p99 ms until all three
    nodes serve one endpoint's names changed, and the seconds until all three first
    answered (all started at once)."""
    out = subprocess.run(
        [sys.executable, str(HERE / "scale_cluster.py"), "--interval", "100ms", "--cycles",
         str(cycles)],
        env={**os.environ, "DNSFAILOVER_BIN": str(binary)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"nodes: median (\d+) ms, p99 (\d+) ms", out)
    start = re.search(r"first answer: ([\d.]+) s", out)
    if found is None or start is None:
        raise SystemExit(f"unexpected scale_cluster output:\n{out}")
    return float(found[1]), float(found[2]), float(start[1])


def ratio_line(label: str, ours: list[float], base: list[float]) -> str:
    ratios = [o / b for o, b in zip(ours, base, strict=True) if b]
    return (
        f"{label:<34} base median {statistics.median(base):9.2f}   this median "
        f"{statistics.median(ours):9.2f}   per-round ratio median {statistics.median(ratios):5.3f}"
        f"   ({', '.join(f'{r:.2f}' for r in ratios)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=20, help="failover cycles per run")
    ap.add_argument("--seconds", type=int, default=5, help="dnsperf seconds per run")
    ap.add_argument("--skip-qps", action="store_true")
    ap.add_argument("--skip-failover", action="store_true")
    ap.add_argument("--scale", action="store_true", help="also bench/scale.py (~75 s a run)")
    ap.add_argument(
        "--cluster", action="store_true", help="also bench/scale_cluster.py (~2.5 min a run)"
    )
    args = ap.parse_args()
    print(f"machine: {machine()}")
    this = Path(sys.executable).with_name("dnsfailover")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = base_build(args.base, tmp)
        try:
            rows: dict[str, tuple[list[float], list[float]]] = {}

            def add(label: str, base_value: float, our_value: float) -> None:
                b, o = rows.setdefault(label, ([], []))
                b.append(base_value)
                o.append(our_value)

            listeners = None if args.skip_qps else Listeners()
            try:
                for i in range(args.rounds):
                    if not args.skip_failover:
                        b_down, b_back = failover(base, args.cycles)
                        o_down, o_back = failover(this, args.cycles)
                        add("killed -> answer changed (ms)", b_down, o_down)
                        add("restored -> answer back (ms)", b_back, o_back)
                        print(f"round {i + 1}: failover base {b_down:.0f}/{b_back:.0f} ms, "
                              f"this {o_down:.0f}/{o_back:.0f} ms", flush=True)  # fmt: skip
                    if args.scale:
                        b_change, b_outage, b_idle = scale(base)
                        o_change, o_outage, o_idle = scale(this)
                        add("scale: one endpoint's names (ms)", b_change, o_change)
                        add("scale: 500-endpoint outage (s)", b_outage, o_outage)
                        add("scale: idle CPU, % of a core", b_idle, o_idle)
                        print(f"round {i + 1}: scale base {b_change:.0f} ms/{b_outage:.2f} s/"
                              f"{b_idle:.0f}%, this {o_change:.0f} ms/{o_outage:.2f} s/"
                              f"{o_idle:.0f}%", flush=True)  # fmt: skip
                    if args.cluster:
                        b_med, b_p99, b_start = cluster(base, args.cycles)
                        o_med, o_p99, o_start = cluster(this, args.cycles)
                        add("cluster: all 3 nodes changed, median (ms)", b_med, o_med)
                        add("cluster: all 3 nodes changed, p99 (ms)", b_p99, o_p99)
                        add("cluster: start-up, all 3 answer (s)", b_start, o_start)
                        print(f"round {i + 1}: cluster base {b_med:.0f}/{b_p99:.0f} ms, "
                              f"start {b_start:.1f} s, this {o_med:.0f}/{o_p99:.0f} ms, "
                              f"start {o_start:.1f} s", flush=True)  # fmt: skip
                    if listeners is not None:
                        # the first result is the health-checked name's (then the mix)
                        qb = run_ours("base", "0", [], {}, listeners.port, args.seconds, base)[0]
                        qo = run_ours("this", "0", [], {}, listeners.port, args.seconds, this)[0]
                        add("QPS, health-checked name", qb.qps, qo.qps)
                        add("server CPU us/query", qb.cpu_us, qo.cpu_us)
                        print(f"round {i + 1}: qps base {qb.qps:,.0f} ({qb.cpu_us:.2f} us/q), "
                              f"this {qo.qps:,.0f} ({qo.cpu_us:.2f} us/q)", flush=True)  # fmt: skip
            finally:
                if listeners is not None:
                    listeners.close()
            print(f"base {args.base} vs this checkout, {args.rounds} interleaved rounds:")
            for label, (base_values, our_values) in rows.items():
                print(ratio_line(label, our_values, base_values))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "base")],
                check=False,
            )


if __name__ == "__main__":
    main()
