"""terraform/: it parses, checkov finds nothing, and the IAM policy matches the provider.

No cloud access and no terraform binary: every `.tf` file is parsed with python-hcl2;
checkov (installed by scripts/test in its own venv, `.venv/checkov`, because it pins many
dependencies) must report no failed check; and the route53-access policy must allow exactly
the Route 53 operations the route53 provider performs against moto's server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import hcl2
import pytest
import re2
from dnsfailover_route53.provider import Route53Provider

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import create_provider
from dnsfailover.provider.plan import diff

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
ACCESS_POLICY = TERRAFORM / "modules" / "route53-access" / "main.tf"
CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"
ZONE = "iam.test."
CHECKOV_ARGS = ["-d", "terraform", "--framework", "terraform", "--compact", "--quiet"]
CHECKOV_ARGS += ["--skip-download", "-o", "json"]


def unquote(value: Any) -> Any:
    """python-hcl2 (>= 5) keeps the quotes of string literals and labels: drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        doc = hcl2.load(f)
    assert isinstance(doc, dict), path
    return doc


def blocks(doc: dict[str, Any], kind: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """Labelled blocks of one kind (`variable`, `output`, `data`...), by their labels."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}

    def walk(node: Any, labels: tuple[str, ...]) -> None:
        if isinstance(node, dict) and (node.get("__is_block__") or not node):
            out[labels] = node
        elif isinstance(node, dict):
            for key, value in node.items():
                if not key.startswith("__"):
                    walk(value, (*labels, unquote(key)))
        elif isinstance(node, list):
            for item in node:
                walk(item, labels)

    walk(doc.get(kind, []), ())
    return out


TF_FILES = sorted(TERRAFORM.rglob("*.tf"))
MODULES = sorted({p.parent for p in TF_FILES})


def test_terraform_tree_exists() -> None:
    names = {str(m.relative_to(TERRAFORM)) for m in MODULES}
    assert names >= {"modules/route53-access", "modules/node", "examples/multi-region"}


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    load(path)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_module_is_pinned_typed_and_documented(module: Path) -> None:
    assert (module / "README.md").is_file(), f"{module}: no README.md"
    versions = load(module / "versions.tf")["terraform"][0]
    assert unquote(versions["required_version"]).startswith(">="), module
    aws = versions["required_providers"][0]["aws"]
    assert unquote(aws["source"]) == "hashicorp/aws", module
    assert re.fullmatch(r"~> 5\.\d+(\.\d+)?", unquote(aws["version"])), module
    for path in module.glob("*.tf"):
        doc = load(path)
        for (name,), var in blocks(doc, "variable").items():
            assert "type" in var, f"{path}: variable {name} has no type"
            assert unquote(var.get("description", "")), f"{path}: variable {name} undescribed"
        for (name,), out in blocks(doc, "output").items():
            assert unquote(out.get("description", "")), f"{path}: output {name} undescribed"


def test_checkov_reports_no_failed_checks() -> None:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run ./scripts/test (it creates .venv/checkov)")
    proc = subprocess.run(
        [str(CHECKOV), *CHECKOV_ARGS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        # offline: no fetch of Prisma Cloud's guideline mappings
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    assert reports, "checkov scanned nothing"
    failures = []
    for r in reports:
        assert r["summary"]["parsing_errors"] == 0, r["summary"]
        assert r["summary"]["resource_count"] > 0, r["summary"]
        for c in r["results"].get("failed_checks", []):
            lines = "-".join(map(str, c.get("file_line_range", [])))
            failures.append(
                f"{c['check_id']} {c['resource']} ({c['file_path']}:{lines}): {c['check_name']}"
            )
    assert not failures, "checkov failed checks (fix, or #checkov:skip=ID:reason):\n" + (
        "\n".join(failures)
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def policy_actions() -> set[str]:
    """Every route53: action the route53-access policy document allows."""
    docs = blocks(load(ACCESS_POLICY), "data")
    policy = docs[("aws_iam_policy_document", "route53")]
    actions: set[str] = set()
    for statement in policy["statement"]:
        assert unquote(statement.get("effect", '"Allow"')) == "Allow", statement
        raw = statement["actions"]
        assert isinstance(raw, list), f"actions must be a plain list: {raw!r}"
        actions |= {unquote(a) for a in raw}
    return actions


async def record_operations(
    options: dict[str, Any], plan_records: tuple[RecordSet, ...]
) -> set[str]:
    """Run start → populate → apply → close; the Route 53 operations the provider called."""
    called: set[str] = set()

    def before_call(model: Any, **_: Any) -> None:
        called.add(model.name)

    provider = create_provider("route53", ZONE, options)
    assert isinstance(provider, Route53Provider)
    make_client: Callable[[], Route53Client] = provider._make_client

    def hooked() -> Route53Client:
        client = make_client()
        client.meta.events.register("before-call.route53", before_call)
        return client

    mp = pytest.MonkeyPatch()
    mp.setattr(provider, "_make_client", hooked)
    try:
        await provider.start()
        populated = await provider.populate([(r.name, r.rtype) for r in plan_records])
        plan = diff(ZONE, populated, plan_records)
        assert plan, "the plan must change something, or apply calls nothing"
        await provider.apply(plan)
    finally:
        await provider.close()
        mp.undo()
    return called


async def test_iam_policy_allows_exactly_what_the_provider_calls(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    admin = boto3.client(
        "route53",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    zone_id = admin.create_hosted_zone(Name=ZONE, CallerReference="iam")["HostedZone"]["Id"]
    admin.close()
    fast = {"endpoint_url": moto_endpoint, "poll_interval": 0.05, "backoff_base": 0.01}
    www = RecordSet(f"www.{ZONE}", "A", 30, ("192.0.2.10",))
    moved = RecordSet(f"www.{ZONE}", "A", 30, ("192.0.2.20",))

    # with hosted_zone_id (GetHostedZone), then without it (ListHostedZonesByName)
    called = await record_operations({**fast, "hosted_zone_id": zone_id.split("/")[-1]}, (www,))
    called |= await record_operations(fast, (moved,))

    performed = {f"route53:{op}" for op in called}
    allowed = policy_actions()
    assert performed == allowed, (
        f"provider calls but the policy does not allow: {sorted(performed - allowed)}; "
        f"the policy allows but the provider never calls: {sorted(allowed - performed)}"
    )


# -- what the node installs ----------------------------------------------------------------

NODE = TERRAFORM / "modules" / "node"


def package_rules() -> list[tuple[bool, str]]:
    """The dnsfailover_package validations as (must match, RE2 pattern), as terraform runs
    them: `can(regex(...))` or `!can(regex(...))`."""
    var = blocks(load(NODE / "variables.tf"), "variable")[("dnsfailover_package",)]
    assert "default" not in var, "no default: nothing is published under these names yet"
    rules = []
    for validation in var["validation"]:
        m = re.fullmatch(
            r'\$\{(!?)can\(regex\((".*"), var\.dnsfailover_package\)\)\}', validation["condition"]
        )
        assert m, validation["condition"]
        rules.append((m.group(1) == "", json.loads(m.group(2))))  # HCL escapes are JSON's
    return rules


def accepted(value: str) -> bool:
    return all(bool(re2.search(pattern, value)) == must for must, pattern in package_rules())


GIT = "git+https://git.example.com/dnsfailover.git@v0.1.0"


@pytest.mark.parametrize(
    "value",
    [
        "dnsfailover-server==0.1.0 dnsfailover-route53==0.1.0",
        "dnsfailover-server[cluster,sns]==0.1.0",
        f"dnsfailover-server@{GIT} dnsfailover-route53@{GIT}#subdirectory=providers/route53",
        "dnsfailover-server@https://dl.example.com/dnsfailover_server-0.1.0-cp311-cp311-"
        "linux_x86_64.whl?X-Amz-Signature=ab12&X-Amz-Expires=600",
    ],
)
def test_the_node_installs_a_pinned_dnsfailover_server(value: str) -> None:
    assert accepted(value)


@pytest.mark.parametrize(
    "value",
    [
        "dnsfailover dnsfailover-route53",  # the old default: PyPI's unrelated 2014 project
        "dnsfailover==0.0.4 dnsfailover-server==0.1.0",
        "dnsfailover[fast] dnsfailover-server==0.1.0",
        "dnsfailover-server",  # not pinned
        "dnsfailover-server>=0.1",
        "dnsfailover-server@git+https://git.example.com/dnsfailover.git",  # no tag
        "dnsfailover-server @ git+https://git.example.com/dnsfailover.git@v1",  # three words
        "",
    ],
)
def test_the_node_refuses_what_would_install_the_wrong_code(value: str) -> None:
    assert not accepted(value)


def test_the_examples_in_the_description_pass_and_every_caller_passes_the_package() -> None:
    var = blocks(load(NODE / "variables.tf"), "variable")[("dnsfailover_package",)]
    examples = re.findall(r'\\"([^"\\]+)\\"', var["description"])
    assert len(examples) >= 2, var["description"]
    for example in examples:
        assert accepted(example), example
    calls = 0
    for path in TF_FILES:
        for (_,), call in blocks(load(path), "module").items():
            if unquote(call["source"]).endswith("modules/node"):
                calls += 1
                assert "dnsfailover_package" in call, path
    assert calls == 3
    template = (NODE / "user_data.sh.tftpl").read_text()
    # one requirement a line in a file: a URL's & or ? never reaches the shell
    assert "pip install -q -r /opt/dnsfailover/requirements.txt" in template
    assert 'split(" ", trimspace(package))' in template
