"""What a regional outage costs the node between "health changed" and "answers swapped".

    .venv/bin/python bench/outage_decide.py [--static 100000] [--names 10000]
        [--endpoints 1000] [--outage 500] [--runs 5] [--profile FILE]

In-process and offline (no probes, no sockets): the `bench/scale.py` config (its config
writer: `--static` records in a zone file, `--names` active-active names over two of
`--endpoints` endpoints each) is loaded, decided once with every endpoint UP and served by
an `EmbeddedZones` attached to a (never bound) `DnsServer` whose fast-path table was warmed
with a query for every failover name.  Then `--outage` endpoints turn DOWN and each stage
is timed as `Node._decide_and_publish` runs it:

- redecide: `engine.redecide` for the changed health keys;
- changed: `Publisher.changed` (which zones answer differently) and `with_serials`;
- diff: `EmbeddedZones._changes` (the per-zone delta for IXFR, workers and the fast path);
- snapshot: `ZoneSnapshot.update` (what runs on a thread: `EmbeddedZones._prepare`);
- swap: `EmbeddedZones._install` (the swap, the fast-path table carried over, listeners).

Each run starts from the same all-UP state; the median of `--runs` runs is printed, wall
(`perf_counter`) and CPU (`process_time`).  The same table follows for one endpoint killed
(the names that use it).  `--profile FILE` writes a cProfile of one outage run's stages.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import address, machine, query, write_config

from dnsfailover.config.load import load
from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import decide, redecide
from dnsfailover.engine.index import index
from dnsfailover.engine.values import Decision, EngineState, Published
from dnsfailover.model import State, ZoneContent
from dnsfailover.runtime.wiring import with_serials
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.embedded import EmbeddedZones

STAGES = ("redecide", "changed", "diff", "snapshot", "swap")


class Stages:
    """Wall and CPU seconds per stage, over runs."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
        self.cpu: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}

    def time(self, stage: str, job: Callable[[], Any]) -> Any:
        w, c = time.perf_counter(), time.process_time()
        result = job()
        self.wall[stage].append(time.perf_counter() - w)
        self.cpu[stage].append(time.process_time() - c)
        return result

    def end_run(self, runs: int) -> None:
        for table in (self.wall, self.cpu):
            table["total"].append(sum(table[s][runs] for s in STAGES))

    def print(self, title: str) -> None:
        print(f"\n{title}")
        print(
            f"  {'stage':<10} {'wall ms':>9} {'cpu ms':>9}   (median of {len(self.wall['total'])})"
        )
        for s in (*STAGES, "total"):
            wall, cpu = statistics.median(self.wall[s]), statistics.median(self.cpu[s])
            print(f"  {s:<10} {wall * 1000:9.1f} {cpu * 1000:9.1f}")


class Bench:
    def __init__(self, config: Config) -> None:
        self.config = config
        ix = index(config)
        self.by_address: dict[str, str] = {}
        for slots in ix.slots.values():
            for _tier, addr, key in slots:
                self.by_address[addr] = key
        self.up = {key: State.UP for key in ix.all_keys}
        t0 = time.perf_counter()
        self.base = decide(config, self.up, EngineState(), 1000.0)
        t1 = time.perf_counter()
        self.embedded = EmbeddedZones()
        self.server = DnsServer(self.embedded.snapshot, port=0)
        self.embedded.attach(self.server)
        self.serials = {z.origin: 1 for z in self.base.zones}
        zones = with_serials(self.base.zones, self.serials)
        self.embedded.put(zones)
        self.published = Published(tuple(zones), self.base, 1000.0)
        t2 = time.perf_counter()
        names = [name for _o, name, _r in ix.managed]
        for _ in range(2):  # a template is learnt on a key's second miss
            for name in names:
                self.server.answer(query(name, 1), tcp=False)
        t3 = time.perf_counter()
        print(
            f"set-up: full decide {t1 - t0:.2f} s, first snapshot {t2 - t1:.2f} s, "
            f"fast-path table warmed with {len(names)} names ({len(self.server._table)} "
            f"templates) in {t3 - t2:.2f} s"
        )
        self._saved = (
            dict(self.embedded.contents),
            self.embedded.snapshot,
            self.server._table,
        )

    def reset(self) -> None:
        contents, snapshot, table = self._saved
        self.embedded.contents, self.embedded.snapshot = dict(contents), snapshot
        self.embedded.history.clear()
        self.server._table = table

    def run(self, killed: list[int], stages: Stages) -> Decision:
        """One decision and publish for `killed` endpoints going DOWN, timed by stage."""
        self.reset()
        keys = {self.by_address[address(e)] for e in killed}
        health = {**self.up, **dict.fromkeys(keys, State.DOWN)}
        gc.collect()  # the previous run's garbage, not this one's
        decision: Decision = stages.time(
            "redecide",
            lambda: redecide(self.config, health, self.base, 1001.0, changed=keys),
        )

        def changed() -> list[ZoneContent]:
            before = {z.origin: z for z in self.published.zones}
            origins = [
                z.origin
                for z in decision.zones
                if z.origin not in before or not z.same_answers(before[z.origin])
            ]
            serials = {o: self.serials[o] + 1 for o in origins}
            zones = with_serials(decision.zones, {**self.serials, **serials})
            return [z for z in zones if z.origin in origins]

        served = stages.time("changed", changed)
        embedded = self.embedded
        changes = stages.time("diff", lambda: embedded._changes(served))
        prepared = stages.time("snapshot", lambda: embedded._prepare(changes))
        stages.time("swap", lambda: embedded._install(*prepared))
        return decision

    def check(self, decision: Decision, killed: list[int]) -> int:
        """How many names the served snapshot answers without the killed endpoints."""
        gone = {address(e) for e in killed}
        hit = [n for n, nd in decision.names.items() if gone & set(self.base.names[n].answer)]
        wrong = [n for n in hit if gone & set(decision.names[n].answer)]
        if wrong:
            raise SystemExit(f"{len(wrong)} names still answer a killed endpoint")
        return len(hit)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--static", type=int, default=100_000)
    ap.add_argument("--names", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=1_000)
    ap.add_argument("--outage", type=int, default=500)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", help="write a cProfile of one outage run here")
    args = ap.parse_args()
    args.yaml, args.interval = False, "100ms"
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        config = load(write_config(Path(d), args))
        print(
            f"zone: {args.static} static records (zone file), {args.names} names over "
            f"{args.endpoints} endpoints; loaded in {time.perf_counter() - t0:.1f} s"
        )
    bench = Bench(config)
    # As the node does after its start: what start-up built stays out of the collector's
    # full passes (which would otherwise land in whichever stage triggers them).
    gc.collect()
    gc.freeze()
    killed = list(range(0, args.endpoints, args.endpoints // args.outage))[: args.outage]
    outage, one = Stages(), Stages()
    hit = 0
    for i in range(args.runs):  # interleaved, so both see the same machine
        hit = bench.check(bench.run(killed, outage), killed)
        outage.end_run(i)
        bench.check(bench.run([7], one), [7])
        one.end_run(i)
    outage.print(f"regional outage: {len(killed)} endpoints DOWN, {hit} names change")
    one.print(f"one endpoint DOWN: {len(_users(bench.base.names, address(7)))} names change")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        bench.run(killed, Stages())
        profiler.disable()
        profiler.dump_stats(args.profile)
        print(f"\nprofile of one outage run: {args.profile}")


def _users(names: Mapping[str, Any], addr: str) -> list[str]:
    return [n for n, nd in names.items() if addr in nd.answer]


if __name__ == "__main__":
    main()
