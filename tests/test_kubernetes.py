"""The Kubernetes manifest (deploy/kubernetes/dnsfailover.yaml), checked offline.

`kubernetes-validate` (its JSON schemas ship in the package) checks every resource strictly
against the API; the rest is what a schema cannot see: the StatefulSet runs the real
`dnsfailover serve` with flags it has, port 53 is bound as non-root thanks to the sysctl,
the Service routes UDP and TCP 53 to ports the pod opens, the ConfigMap holds a config that
validates, and the probes name API routes that answer: /readyz 503 until the first decision
is served and 200 after, /livez while the engine loop runs."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from api_support import A, B, C, D, config_text
from support import BIN, HttpEndpoints, run_cli

from dnsfailover.api.openapi import ROUTES
from dnsfailover.api.server import ApiServer
from dnsfailover.cli.main import build_parser
from dnsfailover.config.load import loads
from dnsfailover.runtime.node import Node

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kubernetes" / "dnsfailover.yaml"
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
# The oldest Kubernetes the manifest is meant for (mixed-protocol LoadBalancer: 1.26), and
# the newest the validator knows.
VERSIONS = ("1.26", None)


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def resource(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def container() -> dict[str, Any]:
    spec = resource("StatefulSet", "dnsfailover")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert isinstance(c, dict)
    return c


def argv() -> list[str]:
    """The container's command line as the kubelet runs it ($(POD_NAME) expanded)."""
    args: list[str] = container()["args"]
    return [a.replace("$(POD_NAME)", "dnsfailover-0") for a in args]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def validate(path: Path, version: str | None) -> subprocess.CompletedProcess[str]:
    assert VALIDATE.exists(), "pip install kubernetes-validate (the test extra)"
    kube = ["-k", version] if version else []
    return subprocess.run(
        [str(VALIDATE), "--strict", *kube, str(path)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_passes_the_kubernetes_schemas(version: str | None) -> None:
    result = validate(MANIFEST, version)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert sorted(passed) == sorted(
        f"{d['kind'].lower()}/{d['metadata']['name']}" for d in documents()
    )


def test_the_validator_catches_a_mistake(tmp_path: Path) -> None:
    """Strict: a misspelled field fails, so a pass above means something."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(MANIFEST.read_text().replace("readinessProbe:", "readynessProbe:"))
    result = validate(broken, None)
    assert result.returncode != 0
    assert "readynessProbe" in result.stdout + result.stderr


def test_port_53_as_non_root_through_the_sysctl() -> None:
    pod = resource("StatefulSet", "dnsfailover")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"} in security["sysctls"]
    c = container()
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert option(argv(), "--dns") == "0.0.0.0:53"


def test_the_service_routes_udp_and_tcp_53_to_ports_the_pod_opens() -> None:
    opened = {p["name"]: (p["containerPort"], p["protocol"]) for p in container()["ports"]}
    dns = resource("Service", "dnsfailover")["spec"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    for p in dns["ports"]:
        assert opened[p["targetPort"]] == (53, p["protocol"])
    api = resource("Service", "dnsfailover-api")["spec"]
    (api_port,) = api["ports"]
    api_flag = option(argv(), "--api")
    assert opened[api_port["targetPort"]] == (int(api_flag.rsplit(":", 1)[1]), "TCP")
    assert api_flag.startswith("0.0.0.0:")  # the kubelet probes the pod's address
    labels = resource("StatefulSet", "dnsfailover")["spec"]["template"]["metadata"]["labels"]
    for svc in (dns, api):
        assert svc["selector"].items() <= labels.items()
    assert resource("StatefulSet", "dnsfailover")["spec"]["serviceName"] == "dnsfailover-api"


def test_state_on_a_volume_and_config_from_the_configmap(tmp_path: Path) -> None:
    sts = resource("StatefulSet", "dnsfailover")["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    (claim,) = sts["volumeClaimTemplates"]
    assert Path(option(argv(), "--state")).parent == Path(mounts[claim["metadata"]["name"]])
    volumes = {v["name"]: v for v in sts["template"]["spec"]["volumes"]}
    config_path = Path(argv()[1])
    (config_volume,) = [n for n, path in mounts.items() if Path(path) == config_path.parent]
    configmap = volumes[config_volume]["configMap"]["name"]
    text = resource("ConfigMap", configmap)["data"][config_path.name]
    (tmp_path / config_path.name).write_text(text)
    result = run_cli("validate", str(tmp_path / config_path.name))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_has_the_flags_it_passes() -> None:
    args = argv()
    assert args[0] == "serve"
    build_parser().parse_args(args)  # SystemExit on a flag or value serve does not take
    assert option(args, "--node-id") == "dnsfailover-0"


def test_the_probes_name_routes_that_answer_on_the_real_command(tmp_path: Path) -> None:
    """The container's command, with loopback ports and a loopback config, as a subprocess:
    every probe's path answers 200 once it runs (on the port the probe names)."""
    c = container()
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["startupProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/livez"
    paths = {route.path for route in ROUTES if route.method == "GET"}
    args = argv()
    for probe in probes.values():
        assert probe["path"] in paths
        assert str(named[probe["port"]]) == option(args, "--api").rsplit(":", 1)[1]

    endpoints = HttpEndpoints()
    try:
        ports = {a: endpoints.start(a) for a in (A, B, C, D)}
        config = tmp_path / "config.yaml"
        config.write_text(config_text(ports))
        local = {"--dns": "127.0.0.1:0", "--api": "127.0.0.1:0", "--state": str(tmp_path / "s.db")}
        run = [str(BIN), "serve", str(config)]
        rest = args[2:]
        for flag, value in zip(rest[::2], rest[1::2], strict=True):
            run += [flag, local.get(flag, value)]
        proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            api = re.search(r"api (http://[^\s,]+)", line)
            assert api is not None, line
            for probe in probes.values():
                with urllib.request.urlopen(api.group(1) + probe["path"], timeout=10) as r:
                    assert r.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            if proc.stdout is not None:
                proc.stdout.close()
    finally:
        endpoints.close()


async def test_readyz_is_503_until_the_first_decision_is_served_then_200(
    tmp_path: Path,
) -> None:
    """Through the real API over a real node, before and after its start."""
    endpoints = HttpEndpoints()
    try:
        ports = {a: endpoints.start(a) for a in (A, B, C, D)}
        node = Node(loads(config_text(ports)), dns_port=0, state_path=tmp_path / "s.db")
        api = ApiServer(node, node, "127.0.0.1", 0, token=None, metrics=node.metrics)
        host, port = await api.start()
        base = f"http://{host}:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/readyz") as r:
                    assert r.status == 503
                    assert (await r.json()) == {"ok": False, "reason": "starting"}
                async with http.get(base + "/livez") as r:  # not started: not wedged either
                    assert r.status == 200
                await node.start()
                async with http.get(base + "/readyz") as r:
                    assert r.status == 200
                    assert (await r.json()) == {"ok": True}
                async with http.get(base + "/livez") as r:
                    body = await r.json()
                    assert r.status == 200
                    assert body["ok"] is True
        finally:
            await api.stop()
            await node.stop()
    finally:
        endpoints.close()


def test_the_pod_runs_as_the_images_user() -> None:
    """The pod's user is the Dockerfile's, so the state volume (fsGroup) is its own."""
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    pod = resource("StatefulSet", "dnsfailover")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert pod["securityContext"]["fsGroup"] == int(uid.group(1))
