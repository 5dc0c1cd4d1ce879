"""bench/fuzz_hits.py, CI-sized: mutated queries through the C hit path (the installed build)
compared with the full path byte for byte, over `HitTable.reply` and a real UdpLoop; and the
ASan build of the bench itself on a few thousand inputs (the 10^6 run is the bench)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import fuzz_hits  # noqa: E402
import hits_inputs  # noqa: E402

pytest.importorskip("dnsfailover.server._mmsg")


def test_mutated_queries_answered_by_c_are_the_full_paths_replies() -> None:
    figures = fuzz_hits.Figures()
    fuzz_hits.fuzz_reply(figures, 20_000, rng_seed=7)
    assert figures.mismatches == []
    assert figures.inputs == 20_000
    assert figures.hits > 2_000  # the valid spellings and the harmless mutations hit


def test_mutated_datagrams_through_a_udp_loop() -> None:
    figures = fuzz_hits.Figures()
    fuzz_hits.fuzz_udp(figures, 3_000, rng_seed=8)
    assert figures.mismatches == []
    assert figures.udp_hits > 300
    assert figures.udp_misses > 300
    assert figures.udp_dropped > 0  # longer than the loop's buffer: dropped in C


def test_tables_swapped_under_a_udp_loop_answer_or_miss_each_query_once() -> None:
    figures = fuzz_hits.Figures()
    fuzz_hits.fuzz_swaps(figures, 3_000, rng_seed=9)
    assert figures.mismatches == []
    assert figures.swap_inputs >= 3_000
    assert 0 < figures.swap_hits < figures.swap_inputs  # some tables answered, None did not
    assert figures.swaps > 10


def test_the_mutator_makes_every_kind_of_input() -> None:
    """Sizes from empty to 65535, compression pointers, OPT and ECS fields, and hits."""
    mutator = hits_inputs.Mutator(hits_inputs.seeds(), random.Random(3))
    inputs = [mutator.one() for _ in range(20_000)]
    sizes = [len(d) for d in inputs]
    assert min(sizes) == 0
    assert max(sizes) > 60_000
    assert any(d[12:].find(b"\xc0") >= 0 for d in inputs)
    assert len(set(inputs)) > 15_000


def test_the_asan_build_runs_the_fuzzer(tmp_path: Path) -> None:
    crash = tmp_path / "crash.bin"
    cmd = [sys.executable, str(ROOT / "bench" / "fuzz_hits.py"), "--inputs", "3000"]
    cmd += ["--udp", "500", "--swaps", "1000", "--crash-file", str(crash)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ASan+UBSan: on" in run.stdout
    assert "extension: " in run.stdout
    assert f"extension: {ROOT}" not in run.stdout  # the ASan build, not the installed one
    assert "crashes: 0" in run.stdout
    assert "differing replies: 0" in run.stdout
    assert not crash.exists()
