"""EtcdCluster against a real etcd with authentication on: the username/password path."""

from __future__ import annotations

import asyncio
import logging
import uuid

import grpc
import pytest
from aetcd.rpc import rpc_pb2 as pb
from aetcd.rpc import rpc_pb2_grpc as stubs
from etcd_support import Etcd, etcd  # noqa: F401 - the fixture
from test_cluster_etcd import Node, until

from dnsfailover.cluster.types import SharedDecision
from dnsfailover.config.cluster import ClusterConfig

PASSWORD = "etcd-root-pw-never-logged"


async def enable_auth(endpoint: str) -> None:
    """What `etcdctl user add root; etcdctl auth enable` does, over etcd's own gRPC API."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        auth = stubs.AuthStub(channel)
        await auth.UserAdd(pb.AuthUserAddRequest(name="root", password=PASSWORD))
        try:
            await auth.RoleAdd(pb.AuthRoleAddRequest(name="root"))
        except grpc.aio.AioRpcError as e:  # some etcd versions create it themselves
            if "exists" not in (e.details() or ""):
                raise
        await auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.AuthEnable(pb.AuthEnableRequest())


def config(endpoint: str, password_env: str) -> ClusterConfig:
    prefix = f"/dnsfailover/auth-{uuid.uuid4().hex[:8]}"
    return ClusterConfig.model_validate(
        {
            "etcd": {
                "endpoints": [endpoint],
                "prefix": prefix,
                "timeout": 1.0,
                "username": "root",
                "password_env": password_env,
            },
            "lease_ttl": 2,
        }
    )


async def test_nodes_with_the_password_lead_and_publish_and_never_log_it(
    etcd: Etcd,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await enable_auth(etcd.endpoint)
    monkeypatch.setenv("ETCD_TEST_PASSWORD", PASSWORD)
    cfg = config(etcd.endpoint, "ETCD_TEST_PASSWORD")
    a, b = Node(cfg, "a", "us"), Node(cfg, "b", "eu")
    await a.cluster.start()
    await b.cluster.start()
    try:
        await until(lambda: a.cluster.leader or b.cluster.leader, "a leader")
        leader = a if a.cluster.leader else b
        other = b if leader is a else a
        term = leader.cluster.term
        assert term is not None
        decision = SharedDecision(term=term, leader=leader.name, at=1.0)
        assert await leader.cluster.publish(decision)
        await until(lambda: any(d.at == 1.0 for d in other.decisions), "the decision")
    finally:
        await a.cluster.stop()
        await b.cluster.stop()
    assert PASSWORD not in caplog.text


async def test_a_wrong_password_is_degraded_not_a_crash(
    etcd: Etcd,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await enable_auth(etcd.endpoint)
    monkeypatch.setenv("ETCD_TEST_PASSWORD", "not-the-password")
    node = Node(config(etcd.endpoint, "ETCD_TEST_PASSWORD"), "a", "us")
    await node.cluster.start()
    try:
        await asyncio.sleep(1.5)
        assert not node.cluster.connected
        assert not node.cluster.leader
        assert node.links in ([], [False])
    finally:
        await node.cluster.stop()
    assert "authentication failed" in caplog.text  # the operator is told why
    assert "not-the-password" not in caplog.text
    assert PASSWORD not in caplog.text
