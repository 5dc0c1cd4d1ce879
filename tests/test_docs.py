"""The README and docs/ hold together: every relative link and anchor resolves, every page is
in the index, the README stays short and its commands are the ones CI and the scripts run,
every command the parser has is in the README, and the snippets the docs present as working
(the small config, the webhook check) are the ones that work."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from support import BIN

from dnsfailover.config.load import loads

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# pages other parts of issue 18 write; linked before they land
PENDING = {f"docs/{n}.md" for n in ("packaging", "status", "demo", "deploy", "import")}
# paths in examples that stand for the reader's own files
EXAMPLE_PATHS = {"config/bad.yaml", "config/prod.yaml"}

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[(?:[^\]\n]|\n(?!\n))*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
REPO_PATH = re.compile(
    r"`((?:\.ci|bench|config|deploy|dnsfailover|providers|scripts|terraform|tests)/[\w./-]*)`"
)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced blocks and inline code, where links are links."""
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _level, title in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text()))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        where, _, fragment = target.partition("#")
        dest = (page.parent / where).resolve() if where else page
        name = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if name not in PENDING or fragment:
                broken.append(f"{target}: no such file")
            continue
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {name}")
    assert broken == []


def test_the_docs_index_lists_every_page() -> None:
    index = DOCS / "README.md"
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in relative_links(index)}
    every = {p.resolve() for p in DOCS.glob("*.md")} | {ROOT / p for p in PENDING}
    assert every - linked - {index.resolve()} == set()


def test_the_readme_links_every_page_of_the_manual() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(README)}
    every = {p.resolve() for p in DOCS.glob("*.md")} | {ROOT / p for p in PENDING}
    assert every - linked == set()


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 150


def test_the_readme_commands_are_the_ones_ci_and_the_scripts_run() -> None:
    blocks = [b.strip() for b in re.findall(r"^```\n(.*?)^```", README.read_text(), re.M | re.S)]
    assert "./scripts/run" in blocks
    assert "./scripts/test" in blocks
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip()]
    assert ci[-1] == "./scripts/test", "CI runs the README's test command last"
    for script in ("scripts/run", "scripts/test"):
        assert os.access(ROOT / script, os.X_OK), script
    run = (ROOT / "scripts/run").read_text()
    assert re.search(r"dnsfailover\"? serve config/example\.yaml \"\$@\"", run), run
    assert re.search(r"^exec .*pytest", (ROOT / "scripts/test").read_text(), re.M)


def cli_commands() -> set[str]:
    done = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listing = done.stdout.split("COMMAND\n", 2)[-1].split("\n\n")[0]
    return set(re.findall(r"^    ([a-z][a-z-]*)", listing, re.M))


def test_every_command_is_in_the_readme_and_in_docs_commands() -> None:
    commands = cli_commands()
    assert {"validate", "serve", "demo", "drain"} <= commands
    readme = README.read_text()
    listed = readme[readme.index("## Commands") : readme.index("## Documentation")]
    in_readme = {
        code.split()[0]
        for names in re.findall(r"^- (.*?) —", listed, re.M)
        for code in re.findall(r"`([^`]+)`", names)
    }
    assert commands - in_readme == set()
    reference = (DOCS / "commands.md").read_text() + (DOCS / "operations.md").read_text()
    missing = {c for c in commands if not re.search(rf"dnsfailover {c}\b|`{c}`", reference)}
    assert missing == set()


def test_the_readme_quick_start_matches_the_serve_defaults() -> None:
    done = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "127.0.0.1:5353" in done.stdout
    assert "127.0.0.1:8053" in done.stdout
    readme = README.read_text()
    assert "dig @127.0.0.1 -p 5353 www.example.test. A" in readme
    assert "<http://127.0.0.1:8053/>" in readme
    example = loads((ROOT / "config/example.yaml").read_text(), "config/example.yaml")
    assert "www" in {n.split(".")[0] for z in example.zones.values() for n in z.failover}


def test_the_small_config_in_the_reference_validates() -> None:
    blocks = yaml_blocks("configuration.md")
    assert blocks, "no yaml block"
    for block in blocks:
        config = loads(block, "docs/configuration.md")
        assert config.zones


def yaml_blocks(page: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", (DOCS / page).read_text(), re.M | re.S)


def test_the_check_and_failover_snippets_validate_together() -> None:
    (checks,) = yaml_blocks("checks.md")
    (failover,) = yaml_blocks("failover.md")
    zone = textwrap.dedent("""\
        zones:
          example.com.:
            soa: {mname: ns1.example.com., rname: hostmaster.example.com.}
            nameservers: [ns1.example.com.]
            records: {ns1: {type: A, values: [192.0.2.53]}}
        """)
    config = loads(checks + zone + textwrap.indent(failover, "    "), "docs snippets")
    assert set(config.checks) == {"web", "db", "resolver"}
    (names,) = [set(z.failover) for z in config.zones.values()]
    assert {n.split(".")[0] for n in names} == {"www", "api"}


def _bare(function: ast.FunctionDef) -> str:
    """The function's code without annotations or docstring: what it does, not how it reads."""
    function.returns = None
    for arg in function.args.args:
        arg.annotation = None
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        function.body = body[1:]
    return ast.dump(function, include_attributes=False)


def _function(source: str, name: str) -> ast.FunctionDef:
    found = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == name
    ]
    assert len(found) == 1, name
    return found[0]


def test_the_webhook_check_in_the_docs_is_the_one_the_tests_run() -> None:
    text = (DOCS / "notifications.md").read_text()
    (block,) = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    tested = (ROOT / "tests/test_alerts.py").read_text()
    assert _bare(_function(textwrap.dedent(block), "verify")) == _bare(_function(tested, "verify"))


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_named_in_the_docs_exist(page: Path) -> None:
    named = set(REPO_PATH.findall(FENCE.sub("", page.read_text())))
    missing = {p for p in named if not (ROOT / p).exists()} - EXAMPLE_PATHS
    assert missing == set()


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_row_has_its_header_s_columns(page: Path) -> None:
    """A `|` left unescaped in a cell (`up|down`) shifts the row: GitHub then drops cells."""
    cells = re.compile(r"(?<!\\)\|")
    lines = [line.strip() for line in FENCE.sub("", page.read_text()).splitlines()]
    bad = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and re.fullmatch(r"\|[-| :]+\|", lines[i + 1]):
            width = len(cells.split(line))
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                if len(cells.split(row)) != width:
                    bad.append(row[:80])
    assert bad == []
