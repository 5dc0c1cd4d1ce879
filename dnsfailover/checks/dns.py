"""DNS probe: ask the target server one question with aiodns and judge rcode and answer.

A port other than 53 works: c-ares takes `ip:port` (`[v6]:port`) nameserver strings, for
UDP and for the TCP retry after truncation alike.

Each probe uses a fresh resolver (~0.13 ms to create and close), not one per target:
c-ares keeps a per-channel answer cache (on by default since 1.23, up to the record TTL, and
pycares offers no way to turn it off), so a reused resolver answers a repeated query from
memory and would keep reporting a dead server as up for as long as the TTL.  A fresh channel
also carries no "server failed" state from earlier probes.  `resolvconf_path=/dev/null` keeps
the host's resolv.conf options (rotate, attempts, search domains) out of the probe.

c-ares reports the response code only through its status: NOERROR without records is
ENODATA, NXDOMAIN is ENOTFOUND, SERVFAIL is ESERVFAIL and so on; `_RCODE_BY_STATUS` maps
them back.  ARES_FLAG_NOCHECKRESP makes c-ares hand over SERVFAIL/REFUSED answers at once
instead of retrying.

A source address (a region's `source_address`) is c-ares' `local_ip`: the channel binds its
UDP and TCP sockets to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import get_args

import aiodns
import pycares
from aiodns import error as ares

from dnsfailover.checks.details import (
    cannot_probe,
    failed,
    shortage_errno,
    shorten,
    socket_shortage,
    timeout_detail,
)
from dnsfailover.config.checks import CheckConfig, DnsQueryType
from dnsfailover.model import ProbeResult, Target, hostport

logger = logging.getLogger("dnsfailover.checks")

QUERY_TYPES = frozenset(get_args(DnsQueryType))

_RCODE_BY_STATUS = {
    ares.ARES_ENODATA: "NOERROR",
    ares.ARES_ENOTFOUND: "NXDOMAIN",
    ares.ARES_ESERVFAIL: "SERVFAIL",
    ares.ARES_EREFUSED: "REFUSED",
    ares.ARES_ENOTIMP: "NOTIMP",
    ares.ARES_EFORMERR: "FORMERR",
}
_STATUS_DETAIL = {
    ares.ARES_ECONNREFUSED: "connection refused",
    ares.ARES_EBADRESP: "malformed response",
    ares.ARES_EBADNAME: "query name is not a valid domain name",
    ares.ARES_ECANCELLED: "query cancelled",
}
_FLAGS = pycares.ARES_FLAG_NOCHECKRESP | pycares.ARES_FLAG_EDNS
_TRIES = 2  # one retransmission inside the timeout covers a single lost UDP packet


def normalize(value: str) -> str:
    """Canonical text for comparing answers: IPs compressed, names lower-case without dot."""
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return " ".join(token.rstrip(".") for token in text.lower().split()) or text


def rdata_text(data: object) -> str:
    """Presentation text of one answer record's data, close to zone-file syntax."""
    match data:
        case pycares.ARecordData(addr=addr) | pycares.AAAARecordData(addr=addr):
            return addr
        case pycares.CNAMERecordData(cname=name) | pycares.NSRecordData(nsdname=name):
            return name
        case pycares.PTRRecordData(dname=name):
            return name
        case pycares.MXRecordData(priority=priority, exchange=exchange):
            return f"{priority} {exchange}"
        case pycares.TXTRecordData(data=raw):
            return raw.decode("utf-8", errors="replace")
        case pycares.SRVRecordData(priority=pri, weight=weight, port=port, target=host):
            return f"{pri} {weight} {port} {host}"
        case pycares.SOARecordData() as soa:
            return (
                f"{soa.mname} {soa.rname} {soa.serial} {soa.refresh} {soa.retry} "
                f"{soa.expire} {soa.minimum}"
            )
        case pycares.CAARecordData(critical=critical, tag=tag, value=value):
            return f'{critical} {tag} "{value}"'
    return str(data)


class DnsProbe:
    """Query `check.query`/`query_type` at the target; expect an rcode and answer values."""

    def __init__(self, check: CheckConfig, source_address: str | None = None) -> None:
        # pycares takes local_ip=None as "no binding"; keyword only when set keeps the
        # resolver's arguments what they were without one.
        self._source: dict[str, str] = {"local_ip": source_address} if source_address else {}
        self._qname = check.query or "."
        self._qtype = check.query_type.upper()
        self._timeout = check.timeout
        self._expect_rcode = check.expect_rcode
        self._expect = tuple(normalize(v) for v in check.expect_answer)

    async def __call__(self, target: Target) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        if self._qtype not in QUERY_TYPES:
            return failed(0.0, f"unsupported query type {shorten(self._qtype, 12)}")
        try:
            resolver = aiodns.DNSResolver(
                nameservers=[hostport(target.address, target.port)],
                loop=loop,
                timeout=self._timeout / _TRIES,
                tries=_TRIES,
                flags=_FLAGS,
                resolvconf_path="/dev/null",
                **self._source,
            )
        except Exception as exc:  # pycares.AresError, bad address: report, never raise
            if (code := shortage_errno(exc) or socket_shortage()) is not None:
                return cannot_probe(0.0, code, target.key)
            logger.warning("dns: cannot create a resolver for %s: %r", target.key, exc)
            return failed(0.0, shorten(f"resolver setup failed: {exc}"))
        try:
            async with asyncio.timeout(self._timeout):
                result = await resolver.query_dns(self._qname, self._qtype)
        except TimeoutError:
            return failed(loop.time() - start, timeout_detail(self._timeout))
        except ares.DNSError as exc:
            status = exc.args[0] if exc.args else None
            latency = loop.time() - start
            if status == ares.ARES_ETIMEOUT:
                return failed(latency, timeout_detail(self._timeout))
            if status in _RCODE_BY_STATUS:
                return self._judge(latency, _RCODE_BY_STATUS[status], [])
            # c-ares reports a socket it could not open as the server refusing
            if (code := socket_shortage()) is not None:
                return cannot_probe(latency, code, target.key)
            detail = _STATUS_DETAIL.get(status) if isinstance(status, int) else None
            return failed(latency, detail or shorten(f"DNS error: {exc}"))
        except Exception as exc:  # the contract: a probe reports, it never raises
            logger.warning("dns: unexpected error probing %s: %r", target.key, exc)
            return failed(loop.time() - start, shorten(f"probe error: {type(exc).__name__}"))
        finally:
            await resolver.close()
        answers = [rdata_text(record.data) for record in result.answer]
        return self._judge(loop.time() - start, "NOERROR", answers)

    def _judge(self, latency: float, rcode: str, answers: list[str]) -> ProbeResult:
        if rcode != self._expect_rcode:
            return failed(latency, f"rcode {rcode} (expected {self._expect_rcode})")
        have = {normalize(a) for a in answers}
        missing = [v for v in self._expect if v not in have]
        got = ", ".join(answers) if answers else "no records"
        if missing:
            return failed(latency, shorten(f"answer lacks {', '.join(missing)} (got {got})", 120))
        return ProbeResult(ok=True, latency=latency, detail=shorten(f"{rcode}: {got}", 120))
