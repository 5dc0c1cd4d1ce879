"""The layout's rules hold, and breaking one is caught: `lint-imports` against the real tree,
then against a copy with one forbidden import added (the API reaching into the runtime)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 550  # "a module over ~500 lines wants splitting"


def lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_hold() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_forbidden_import_breaks_them(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "dnsfailover", tmp_path / "dnsfailover")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    views = tmp_path / "dnsfailover" / "api" / "views.py"
    text = views.read_text()
    # a type-only import counts: it is still a dependency a reader has to follow
    marker = "if TYPE_CHECKING:\n"
    assert marker in text
    views.write_text(
        text.replace(marker, marker + "    from dnsfailover.runtime.node import Node\n", 1)
    )
    result = lint(tmp_path, pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "dnsfailover.api.views -> dnsfailover.runtime.node" in result.stdout


def test_no_module_is_much_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "dnsfailover").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
