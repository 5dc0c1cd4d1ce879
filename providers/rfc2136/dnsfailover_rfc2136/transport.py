"""Signed DNS messages to the primary, with the core's retry loop, through dnspython's asyncio
API.

Timeouts, connection errors and SERVFAIL are retried with exponential backoff and full jitter
until a deadline.  TSIG failures (BADKEY, BADSIG, BADTIME) and refusals are never retried.
Error texts name the server, the operation and the cause; never the secret.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone

from dnsfailover.backoff import Backoff
from dnsfailover.model import hostport
from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.retry import Retrier
from dnsfailover_rfc2136.options import Rfc2136Options

T = TypeVar("T")

#: rcodes that say what was wrong with the request; never retried
RCODE_MEANING = {
    dns.rcode.REFUSED: "REFUSED: the primary refused it; is the key allowed to? BIND: the "
    "zone's allow-update / update-policy (allow-query, allow-transfer); PowerDNS: "
    "dnsupdate=yes, allow-dnsupdate-from covering this host, and the zone's "
    "TSIG-ALLOW-DNSUPDATE metadata naming the key (PowerDNS refuses updates without them); "
    "Knot: an acl with this key and action: update (and its update-type) on the zone",
    dns.rcode.NOTAUTH: "NOTAUTH: the primary is not authoritative for the zone, or does not "
    "accept the key",
    dns.rcode.NOTZONE: "NOTZONE: a name is outside the zone",
    dns.rcode.FORMERR: "FORMERR: the primary could not parse the message",
    dns.rcode.NOTIMP: "NOTIMP: the primary does not implement dynamic updates",
}
#: rcodes of a failed prerequisite (RFC 2136 §3.2.5)
PREREQ_RCODES = frozenset(
    {dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN}
)


class SendError(ProviderError):
    """A message to the primary failed.

    :ivar detail: what went wrong, without the operation's name
    :ivar attempts: how many times it was sent
    :ivar maybe_applied: an earlier attempt got no answer, so an update may have taken effect
    """

    def __init__(self, op: str, detail: str, *, attempts: int, maybe_applied: bool) -> None:
        super().__init__(f"{op}: {detail}")
        self.detail = detail
        self.attempts = attempts
        self.maybe_applied = maybe_applied


class ServFail(ProviderError):
    """The primary answered SERVFAIL."""


#: the text dnspython gives an unsigned answer to a signed request
UNSIGNED = "response requires a TSIG but does not have one"


def describe_tsig(exc: Exception, key_name: str, op: str = "query") -> str | None:
    """What a TSIG failure means, or None when `exc` is no TSIG failure.

    Knot answers a request its ACL denies with NOTAUTH and TSIG error BADKEY, even for a key
    it knows: for an UPDATE or AXFR (the key already passed a signed query) that is a denial,
    not an unknown key.  PowerDNS answers a request signed with a key it does not know, or
    with a wrong secret, unsigned.
    """
    if isinstance(exc, dns.tsig.PeerBadKey):
        if op in ("update", "axfr"):
            action = "update" if op == "update" else "transfer"
            return (
                f"NOTAUTH/BADKEY: the primary will not let key {key_name} {action} the zone "
                f"(Knot answers so when no acl of the zone allows it: add one with key "
                f"{key_name} and action: {action})"
            )
        return (
            f"BADKEY: the primary does not accept key {key_name} (it does not know it with "
            "this algorithm, or, on Knot, no acl of the zone names it)"
        )
    if isinstance(exc, dns.exception.FormError) and UNSIGNED in str(exc):
        return (
            f"the primary answered without a signature: it does not know key {key_name}, or "
            "the secret is wrong (PowerDNS answers so; compare `pdnsutil list-tsig-keys`)"
        )
    if isinstance(exc, dns.tsig.PeerBadSignature):
        return f"BADSIG: the primary rejected our signature (wrong secret for key {key_name}?)"
    if isinstance(exc, dns.tsig.PeerBadTime | dns.tsig.BadTime):
        return "BADTIME: the clocks of this host and the primary differ too much"
    if isinstance(exc, dns.tsig.PeerBadTruncation):
        return "BADTRUNC: the primary rejected the truncated signature"
    if isinstance(exc, dns.tsig.BadSignature):
        return f"the answer's signature does not verify (wrong secret for key {key_name}?)"
    if isinstance(exc, dns.message.UnknownTSIGKey | dns.tsig.BadKey | dns.tsig.BadAlgorithm):
        return f"the answer is signed with a key other than {key_name}"
    return None


def transient(exc: BaseException) -> bool:
    """Worth retrying: no answer, a broken connection, SERVFAIL."""
    if isinstance(exc, dns.xfr.TransferError):
        return bool(exc.rcode == dns.rcode.SERVFAIL)
    return isinstance(exc, dns.exception.Timeout | ServFail | OSError | EOFError)


def unanswered(exc: BaseException) -> bool:
    """The message may have reached the primary and taken effect although we got no answer."""
    return isinstance(exc, dns.exception.Timeout | EOFError | ConnectionResetError)


@dataclass(frozen=True, slots=True)
class PrimaryErrors:
    """What a primary's failures mean to the shared retry loop."""

    where: str
    key_name: str
    catch: tuple[type[Exception], ...] = (Exception,)

    def transient(self, exc: Exception) -> bool:
        return transient(exc)

    def ambiguous(self, exc: Exception) -> bool:
        return unanswered(exc)

    def describe(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def fatal(self, op: str, exc: Exception, attempts: int, maybe_applied: bool) -> Exception:
        tsig = describe_tsig(exc, self.key_name, op)
        if tsig is not None:
            return SendError(op, tsig, attempts=attempts, maybe_applied=maybe_applied)
        if isinstance(exc, dns.xfr.TransferError) or not isinstance(
            exc, dns.exception.DNSException
        ):
            return exc  # not ours to explain: the caller handles it
        return SendError(op, f"{type(exc).__name__}: {exc}", attempts=attempts, maybe_applied=False)

    def exhausted(
        self, op: str, exc: Exception, text: str, attempts: int, maybe_applied: bool
    ) -> Exception:
        return SendError(
            op,
            f"gave up after {attempts} attempts to {self.where}: {text}",
            attempts=attempts,
            maybe_applied=maybe_applied,
        )


@dataclass(slots=True)
class Primary:
    """The zone's primary server, spoken to with our TSIG key.

    `calls` counts every message sent, by operation (retries included).
    """

    opts: Rfc2136Options
    key: dns.tsig.Key
    log: logging.Logger
    backoff: Backoff
    retrier: Retrier = field(init=False)

    def __post_init__(self) -> None:
        self.retrier = Retrier(self.backoff, self.log)

    @property
    def calls(self) -> Counter[str]:
        return self.retrier.calls

    @property
    def where(self) -> str:
        return hostport(self.opts.server, self.opts.port)

    def sign(self, msg: dns.message.Message) -> dns.message.Message:
        msg.use_tsig({self.key.name: self.key}, self.key.name, algorithm=self.key.algorithm)
        return msg

    async def _send_once(self, msg: dns.message.Message) -> dns.message.Message:
        o = self.opts
        if o.tcp:
            answer = await dns.asyncquery.tcp(msg, o.server, timeout=o.timeout, port=o.port)
        else:
            answer, _ = await dns.asyncquery.udp_with_fallback(
                msg, o.server, timeout=o.timeout, port=o.port
            )
        if answer.rcode() == dns.rcode.SERVFAIL:
            raise ServFail("the primary answered SERVFAIL")
        return answer

    async def retrying(
        self, op: str, fn: Callable[[], Awaitable[T]], *, deadline_at: float, context: str
    ) -> T:
        """`fn()` until it succeeds, fails for good, or the next backoff would pass
        `deadline_at` (monotonic): the core's retry loop with this primary's errors."""
        return await self.retrier.run(
            op,
            fn,
            PrimaryErrors(self.where, self.key.name.to_text()),
            deadline_at=deadline_at,
            context=context,
        )

    async def query(self, name: str, rtype: str, *, deadline_at: float) -> dns.message.Message:
        """A signed query; NOERROR or NXDOMAIN, anything else raises `SendError`."""
        msg = self.sign(dns.message.make_query(name, rtype))

        async def once() -> dns.message.Message:
            return await self._send_once(msg)

        answer = await self.retrying("query", once, deadline_at=deadline_at, context=name)
        rcode = answer.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            meaning = RCODE_MEANING.get(rcode, dns.rcode.to_text(rcode))
            raise SendError(f"query {name} {rtype}", meaning, attempts=1, maybe_applied=False)
        return answer

    async def update(
        self, msg: dns.message.Message, *, deadline_at: float, context: str
    ) -> tuple[dns.message.Message, bool]:
        """Send a (signed) UPDATE; the answer, whatever its rcode other than SERVFAIL, and
        whether an earlier attempt went unanswered (so it may have been applied)."""
        unanswered_before = False

        async def once() -> dns.message.Message:
            nonlocal unanswered_before
            try:
                return await self._send_once(msg)
            except Exception as e:
                unanswered_before = unanswered_before or unanswered(e)
                raise

        answer = await self.retrying("update", once, deadline_at=deadline_at, context=context)
        return answer, unanswered_before

    async def axfr(self, origin: str, *, deadline_at: float) -> dns.zone.Zone | None:
        """The whole zone by a signed AXFR, or None when the primary refuses the transfer."""
        o = self.opts

        async def once() -> dns.zone.Zone | None:
            try:
                return await transfer()
            except dns.tsig.PeerBadKey:
                # Knot's NOTAUTH + BADKEY for a key its ACL denies the transfer (the key
                # already passed a signed query): a refusal, so read per name instead
                return None

        async def transfer() -> dns.zone.Zone:
            zone = dns.zone.Zone(dns.name.from_text(origin), relativize=False)
            query, _ = dns.xfr.make_query(
                zone,
                keyring={self.key.name: self.key},
                keyname=self.key.name,
                keyalgorithm=self.key.algorithm,
            )
            lifetime = max(o.timeout, deadline_at - time.monotonic())
            await dns.asyncquery.inbound_xfr(
                o.server, zone, query, port=o.port, timeout=o.timeout, lifetime=lifetime
            )
            return zone

        try:
            return await self.retrying("axfr", once, deadline_at=deadline_at, context=origin)
        except dns.xfr.TransferError as e:
            if e.rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
                return None
            raise SendError(
                "axfr", dns.rcode.to_text(e.rcode), attempts=1, maybe_applied=False
            ) from e
