"""Where things live under the cluster's etcd prefix.

```
{prefix}/leader                          node id, under the leader's lease (term = create rev)
{prefix}/decision                        SharedDecision JSON (the head), no lease
{prefix}/names/{name}                    NameEntry JSON, no lease
{prefix}/overrides/{id}                  Override JSON, no lease
{prefix}/nodes/{node}                    NodeBeat JSON, under the node's lease
{prefix}/reports/{region}/{node}/{target}  RegionReport JSON, under the node's lease
```
Path segments are percent-encoded (targets hold '@', ':' and '['; a node or region
could hold '/'), so a DELETE event's key alone says whose report vanished.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote


def _seg(text: str) -> str:
    return quote(text, safe="")


@dataclass(frozen=True, slots=True)
class Parsed:
    """A key under the prefix: `kind` is leader, decision, name, override, node, report or
    other."""

    kind: str
    region: str = ""
    node: str = ""
    target: str = ""
    id: str = ""


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def root(self) -> bytes:
        """Everything of this cluster (the trailing '/' keeps `/a/b2` out of `/a/b`)."""
        return f"{self.prefix}/".encode()

    @property
    def leader(self) -> bytes:
        return f"{self.prefix}/leader".encode()

    @property
    def decision(self) -> bytes:
        return f"{self.prefix}/decision".encode()

    def name(self, name: str) -> bytes:
        return f"{self.prefix}/names/{_seg(name)}".encode()

    def override(self, override_id: str) -> bytes:
        return f"{self.prefix}/overrides/{_seg(override_id)}".encode()

    def node(self, node: str) -> bytes:
        return f"{self.prefix}/nodes/{_seg(node)}".encode()

    def report(self, region: str, node: str, target: str) -> bytes:
        return f"{self.prefix}/reports/{_seg(region)}/{_seg(node)}/{_seg(target)}".encode()

    def parse(self, key: bytes) -> Parsed:
        text = key.decode(errors="replace")
        rest = text[len(self.prefix) + 1 :] if text.startswith(f"{self.prefix}/") else ""
        parts = rest.split("/")
        match parts:
            case ["leader"]:
                return Parsed("leader")
            case ["decision"]:
                return Parsed("decision")
            case ["names", name]:
                return Parsed("name", id=unquote(name))
            case ["overrides", oid]:
                return Parsed("override", id=unquote(oid))
            case ["nodes", node]:
                return Parsed("node", node=unquote(node))
            case ["reports", region, node, target]:
                return Parsed("report", unquote(region), unquote(node), unquote(target))
        return Parsed("other")
