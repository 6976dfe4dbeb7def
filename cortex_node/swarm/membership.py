"""Fleet membership over the swarm A2A extension: heartbeat fan-out and ingest, membership
digests, leave on seal, remote control, and peer discovery with backoff.

Each heartbeat goes to every known, non-sealed peer (bounded concurrency, short timeout) as the
JSON-RPC method ``SwarmHeartbeat``. The receiver stamps its own receipt time, updates the
sender's row, appends a snapshot and syncs the sender's remote-process view, then answers with
its membership digest; the sender registers the peers it did not know, so discovery spreads in
one round.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from cortex_node.a2a.client import PeerUnreachable, normalize_base_url
from cortex_node.a2a.errors import A2AError, InvalidParamsError
from cortex_node.clock import Clock
from cortex_node.config import NodeSettings
from cortex_node.contracts import (
    MAX_REASON_CHARS,
    ControlCall,
    Lifecycle,
    NodeMetrics,
    NodeTier,
    ProcessInfo,
    Snapshot,
    SwarmNodeRegistration,
    WireError,
    format_ts,
    from_wire,
    read_counters,
    to_wire,
)
from cortex_node.store.nodes import NodeRow
from cortex_node.swarm.node_registry import ForeignClaim, NodeRegistry, RegistryFull
from cortex_node.swarm.peers import CONTROL_METHOD, HEARTBEAT_METHOD, LEAVE_METHOD, Peers, peer_base_url, peer_rpc_url
from cortex_node.swarm.remote_kernel import RemoteKernel, processes_from_wire

log = logging.getLogger("cortex.membership")

SWARM_EXTENSION_URI = "https://cortex-swarm.dev/a2a/extensions/swarm/v1"
FAN_OUT_CONCURRENCY = 32
MAX_PROCESSES_PER_PEER = 1024  # a heartbeat listing more agents is refused (a node runs at most 64 by default)
MAX_HINTS = 256  # digest members waiting for their card to be checked; more are dropped until there is room
HINT_CHECKS_AT_ONCE = 8
RECHECK_AFTER_S = 5.0  # an address whose card did not confirm its node is checked again after this,
RECHECK_MAX_S = 300.0  # doubling with every failed check up to this
# bounds of a peer's self-description: generous for a real node, small enough that a hostile one
# cannot grow every registry, digest and node list in the fleet
MAX_NAME_CHARS = 128
MAX_SHORT_CHARS = 64  # group, version, boot id, each capability
MAX_LABELS = 32
MAX_LABEL_CHARS = 256
MAX_CAPABILITIES = 32
BACKOFF_MAX_S = 300.0
CARD_REFRESH_S = 300.0

EventSink = Callable[[str, dict], None]
# (action, reason, drain deadline in seconds or None) -> the node as it stands afterwards (wire form)
ControlSelf = Callable[[str, str, "float | None"], Awaitable[Any]]


@dataclass
class _Backoff:
    failures: int = 0
    next_try: float = 0.0


class Membership:
    """Heartbeats out and in, digests, leave notices, remote control and discovery. Its
    collaborators are explicit: the registry it keeps current, the peer client it sends with,
    the remote-process view it syncs, and a callback that applies control to this node."""

    def __init__(self, *, settings: NodeSettings, node_id: str, boot_id: str, clock: Clock, registry: NodeRegistry,
                 peers: Peers, remote: RemoteKernel, control_self: ControlSelf, on_event: EventSink) -> None:
        self._settings = settings
        self._node_id = node_id
        self._boot_id = boot_id
        self._clock = clock
        self._registry = registry
        self._peers = peers
        self._remote = remote
        self._control_self = control_self
        self._on_event = on_event
        self._backoff: dict[str, _Backoff] = {}
        self._card_checked: dict[str, float] = {}
        self.beat_now = asyncio.Event()  # set when new peers should hear from us without waiting
        self._in_flight: dict[str, asyncio.Task] = {}  # peer id -> its heartbeat call under way
        self._fan_out_limit = asyncio.Semaphore(FAN_OUT_CONCURRENCY)
        self._digest_seen: dict[str, str] = {}  # peer id -> the digest version it last sent us
        self._digest: tuple[str, dict[str, Any]] | None = None  # our digest, by version
        self._last_processes: dict[str, list] = {}  # peer id -> the process list of its last beat
        self._hints: dict[str, str] = {}  # node id -> the base URL to check its card at
        # peers known from their own heartbeats whose card has not yet confirmed them at the
        # address they claim: they get no heartbeat (and so no token) from us until it does
        self._unverified: dict[str, str] = {}
        self._recheck_at: dict[str, tuple[float, float]] = {}  # node id -> (next check, delay after it)
        self._hint_checker: asyncio.Task | None = None

    def methods(self) -> dict[str, Any]:
        return {HEARTBEAT_METHOD: self.on_heartbeat, LEAVE_METHOD: self.on_leave, CONTROL_METHOD: self.on_control}

    # --- sending --------------------------------------------------------------------------------
    def peers(self) -> list[NodeRow]:
        """The peers we send heartbeats to: not sealed, and confirmed at their address."""
        return [r for r in self._registry.list()
                if not r.is_self and r.lifecycle is not Lifecycle.SEALED and r.id not in self._unverified]

    async def fan_out(self, payload: dict[str, Any]) -> None:
        """Send this beat to every peer whose previous heartbeat call has finished: a slow or
        dead peer costs its own call's timeout, never the beat's cadence for the others."""
        timeout = max(0.2, min(5.0, self._settings.heartbeat_interval_ms / 1000))
        for row in self.peers():
            if row.id in self._in_flight:
                continue
            params = dict(payload, digestVersion=self._digest_seen.get(row.id))
            task = asyncio.create_task(self._beat_one(row, params, timeout), name=f"heartbeat-to-{row.id}")
            self._in_flight[row.id] = task
            task.add_done_callback(lambda _t, node_id=row.id: self._in_flight.pop(node_id, None))

    async def _beat_one(self, row: NodeRow, params: dict[str, Any], timeout: float) -> None:
        async with self._fan_out_limit:
            try:
                digest = await self._peers.heartbeat(row.rpc_url, params, timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad peer costs its own call, never the beat of the others
                log.debug("heartbeat to %s (%s) failed: %s", row.name, row.id, exc)
                return
        if isinstance(digest, dict) and isinstance(digest.get("digestVersion"), str) \
                and len(digest["digestVersion"]) <= MAX_SHORT_CHARS:
            self._digest_seen[row.id] = digest["digestVersion"]
        self._learn(digest)

    def busy(self) -> bool:
        """A beat is requested, or heartbeat calls or checks of digest members are under way."""
        checking = self._hint_checker is not None and not self._hint_checker.done()
        return self.beat_now.is_set() or bool(self._in_flight) or checking

    async def stop(self) -> None:
        tasks = list(self._in_flight.values()) + ([self._hint_checker] if self._hint_checker else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def leave(self, reason: str) -> None:
        """Tell every peer at once that we are sealed, so nobody waits for staleness."""
        async def one(row: NodeRow) -> None:
            try:
                await self._peers.leave(row.rpc_url, self._node_id, reason)
            except Exception as exc:  # a seal must go on whatever one peer does
                log.debug("leave notice to %s failed: %s", row.name, exc)

        await asyncio.gather(*(one(r) for r in self.peers()))

    def _learn(self, digest: Any) -> None:
        """A digest's members are hints, never registrations: a member we do not know is
        registered only once its own card, fetched at the address the digest gives, claims its
        id (``_check_hints``). Malformed members are skipped."""
        if not isinstance(digest, dict) or not isinstance(digest.get("members"), list):
            return
        for m in digest["members"]:
            if len(self._hints) >= MAX_HINTS:
                break
            if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not 0 < len(m["id"]) <= MAX_NAME_CHARS:
                continue
            if m["id"] == self._node_id or self._registry.has(m["id"]) or m["id"] in self._hints:
                continue
            try:
                url = peer_base_url(m.get("endpoint"), "member.endpoint")
            except ValueError:
                continue
            if self._registry.find_by_endpoint(url) is None:  # a known address: its own heartbeat decides
                self._hints[m["id"]] = url
        self._start_checks()

    def _start_checks(self) -> None:
        if self._hints and (self._hint_checker is None or self._hint_checker.done()):
            self._hint_checker = asyncio.create_task(self._check_hints(), name="membership-hints")

    async def _check_hints(self) -> None:
        limit = asyncio.Semaphore(HINT_CHECKS_AT_ONCE)
        fresh = False

        async def check(node_id: str, url: str) -> None:
            nonlocal fresh
            if node_id in self._unverified:  # (only these are checked again; bounded like the registry)
                _, delay = self._recheck_at.get(node_id, (0.0, RECHECK_AFTER_S / 2))
                delay = min(RECHECK_MAX_S, delay * 2)
                self._recheck_at[node_id] = (self._clock.monotonic() + delay, delay)
            async with limit:
                try:
                    reg = registration_from_card(await self._peers.card(url), url)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("digest member %s at %s not verified: %s", node_id, url, exc)
                    return
            if reg.id != node_id:
                log.info("node %s claims %s, but the node there is %s: not registered, not sent to",
                         node_id, url, reg.id)
                return
            if self._unverified.get(node_id) == url:  # a peer known from its heartbeat, now confirmed
                del self._unverified[node_id]
                self._recheck_at.pop(node_id, None)
                fresh = True
            if not self._registry.has(reg.id):
                try:
                    await self._registry.register(reg)
                except (ForeignClaim, RegistryFull) as exc:
                    log.info("digest member %s not registered: %s", node_id, exc)
                    return
                fresh = True

        while self._hints:
            batch, self._hints = self._hints, {}
            await asyncio.gather(*(check(node_id, url) for node_id, url in batch.items()))
        if fresh:
            self.beat_now.set()  # new peers hear from us now, not at the next interval

    # --- receiving ------------------------------------------------------------------------------
    async def on_heartbeat(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            reg = from_wire(SwarmNodeRegistration, params.get("node"), "node")
            metrics = from_wire(NodeMetrics, params.get("metrics") or {}, "metrics")
            lifecycle = Lifecycle.parse(params.get("lifecycle", "active"), "lifecycle")
            snap = read_counters(params.get("counters") or {}, "counters")
            # the URLs as they would be stored, so a peer that writes them differently (a trailing
            # slash) is not re-registered, and the digest version moved, on every beat
            if isinstance(reg.endpoint, str):
                reg.endpoint = normalize_base_url(reg.endpoint)
            if isinstance(reg.a2a_endpoint, str):
                reg.a2a_endpoint = reg.a2a_endpoint.rstrip("/")
            row = self._registry.find(reg.id) if isinstance(reg.id, str) else None
            changed = row is None or _changed(row, reg)
            if changed:  # an unchanged registration is the stored row, which was checked when stored
                check_peer_registration(reg, "node")
            raw_processes = params.get("processes") or []
            if isinstance(raw_processes, list) and len(raw_processes) > MAX_PROCESSES_PER_PEER:
                raise ValueError(f"processes lists {len(raw_processes)} entries; at most {MAX_PROCESSES_PER_PEER}")
            # most beats repeat the last list: parse and sync only what changed
            processes = None if raw_processes == self._last_processes.get(reg.id) else processes_from_wire(raw_processes)
        except (WireError, ValueError) as exc:
            raise InvalidParamsError(f"malformed heartbeat: {exc}") from None
        if reg.id == self._node_id:
            raise InvalidParamsError("a heartbeat that claims to come from this node itself; is a node id duplicated?")
        if changed:
            try:
                await self._registry.register(reg)
            except (ForeignClaim, RegistryFull) as exc:
                raise InvalidParamsError(f"heartbeat refused: {exc}") from None
            if row is None or row.endpoint != reg.endpoint:
                self._unverified[reg.id] = reg.endpoint  # confirmed by its card before we send to it
        unconfirmed = self._unverified.get(reg.id)
        if unconfirmed is not None and reg.id not in self._hints \
                and self._clock.monotonic() >= self._recheck_at.get(reg.id, (0.0, 0.0))[0]:
            self._hints[reg.id] = unconfirmed
            self._start_checks()
        await self._registry.record_heartbeat(reg.id, metrics, snap, boot_id=reg.boot_id, lifecycle=lifecycle)
        if processes is not None:
            self._last_processes[reg.id] = raw_processes
            for pid in self._remote.sync_remote_resources(reg.id, processes):
                self._on_event("process.started", {"pid": pid, "nodeId": reg.id})
        return self.digest(params.get("digestVersion"))

    def node_silent(self, node_id: str) -> None:
        """A peer went quiet or left: what it ran is unknown until its next beat says."""
        self._last_processes.pop(node_id, None)  # so that next beat re-syncs even if unchanged
        self._remote.mark_node_unknown(node_id)

    def node_forgotten(self, node_id: str) -> None:
        for table in (self._last_processes, self._digest_seen, self._unverified, self._recheck_at):
            table.pop(node_id, None)

    def digest(self, known_version: Any = None) -> dict[str, Any]:
        """Our membership digest; when the caller already holds the current version, only
        the version (a fleet of N nodes would otherwise ship N^2 entries per interval)."""
        version = f"{self._boot_id}:{self._registry.membership_version}"
        if known_version == version:
            return {"nodeId": self._node_id, "digestVersion": version, "unchanged": True}
        if self._digest is None or self._digest[0] != version:
            members = [{"id": r.id, "name": r.name, "endpoint": r.endpoint, "a2aEndpoint": r.a2a_endpoint,
                        "status": r.status.value, "groupName": r.group_name, "tier": r.tier.value}
                       for r in self._registry.list()]
            self._digest = (version, {"nodeId": self._node_id, "digestVersion": version, "members": members})
        return self._digest[1]

    async def on_leave(self, params: dict[str, Any]) -> dict[str, Any]:
        node_id = params.get("nodeId")
        if not isinstance(node_id, str) or not self._registry.has(node_id) or node_id == self._node_id:
            raise InvalidParamsError("SwarmLeave needs the nodeId of a known peer")
        reason = params.get("reason") if isinstance(params.get("reason"), str) else "sealed"
        await self._registry.set_lifecycle(node_id, Lifecycle.SEALED, f"left the swarm: {reason}"[:MAX_REASON_CHARS])
        self.node_silent(node_id)
        return {"ok": True}

    async def on_control(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            call = from_wire(ControlCall, params, "params")
        except WireError as exc:
            raise InvalidParamsError(f"SwarmControl {exc}") from None
        try:
            node = await self._control_self(call.action, call.reason, call.deadline_seconds)
        except PermissionError as exc:
            raise InvalidParamsError(str(exc)) from None
        return to_wire(node)

    async def control_peer(self, row: NodeRow, action: str, reason: str, deadline_s: float | None) -> Any:
        """drain / undrain / seal of a peer over A2A (it checks the swarm token like every call).
        Raises PermissionError when the peer refuses, RuntimeError when it cannot be reached."""
        call = ControlCall(action=action, reason=reason, deadline_seconds=deadline_s)
        try:
            return await self._peers.control(row.rpc_url, to_wire(call))
        except A2AError as exc:
            raise PermissionError(f"{row.name} ({row.id}) refused to {action}: {exc.message}") from None
        except PeerUnreachable as exc:
            raise RuntimeError(f"{action} of {row.name} ({row.id}) failed: {exc}") from None

    # --- discovery ------------------------------------------------------------------------------
    async def discover_peers(self, endpoints: Iterable[str] = ()) -> list[str]:
        """Three phases: explicit endpoints, configured seeds, then a refresh of the cards of nodes
        already known. Unreachable peers are skipped and retried with backoff. Returns the ids of
        nodes that were new."""
        own = normalize_base_url(self._settings.public_url)
        now = self._clock.monotonic()
        explicit = [normalize_base_url(u) for u in endpoints]
        seeds = [normalize_base_url(u) for u in self._settings.seed_nodes]
        known = [r.endpoint for r in self._registry.list()
                 if not r.is_self and now - self._card_checked.get(r.endpoint, -1e9) > CARD_REFRESH_S]
        found: list[str] = []
        for url in dict.fromkeys(explicit + seeds + known):
            if url == own:
                continue
            backoff = self._backoff.get(url)
            if backoff is not None and now < backoff.next_try:
                continue
            try:
                card = await self._peers.card(url, fresh=True)
                reg = registration_from_card(card, url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable, not a cortex-node, or a card we refuse
                b = self._backoff.setdefault(url, _Backoff())
                b.failures += 1
                delay = min(BACKOFF_MAX_S, (self._settings.heartbeat_interval_ms / 1000) * 2 ** (b.failures - 1))
                b.next_try = now + delay
                log.info("peer %s not reachable (%s); next try in %.0f s", url, exc, delay)
                continue
            self._backoff.pop(url, None)
            self._card_checked[url] = now
            if reg.id == self._node_id:
                continue
            if self._unverified.get(reg.id) == url:
                del self._unverified[reg.id]
                self._recheck_at.pop(reg.id, None)
            claimed = self._registry.find_by_endpoint(url)
            if claimed is not None and claimed.id in self._unverified and claimed.id != reg.id:
                # a heartbeat claimed this address for another node: a false claim introduces nobody
                log.info("node %s claimed %s, but the node there is %s: not registered", claimed.id, url, reg.id)
                continue
            if not self._registry.has(reg.id):
                # a known node's heartbeats keep its row current; a card only introduces a node
                # (or a new identity at a known, confirmed address, which supersedes the old row)
                try:
                    await self._registry.register(reg)
                except (ForeignClaim, RegistryFull) as exc:
                    log.warning("not registering %s: %s", url, exc)
                    continue
                found.append(reg.id)
        if found:
            self.beat_now.set()
        return found


def heartbeat_payload(registration: SwarmNodeRegistration, lifecycle: Lifecycle, metrics: NodeMetrics,
                      counters: Snapshot, agents: list[ProcessInfo], now_ms: int) -> dict[str, Any]:
    """The params of one SwarmHeartbeat: who we are, our lifecycle, load and usage, our agents."""
    return {
        "node": to_wire(registration), "lifecycle": lifecycle.value, "metrics": to_wire(metrics),
        "counters": to_wire(counters), "processes": to_wire(agents), "sentAt": format_ts(now_ms),
    }


def registration_from_card(card: dict[str, Any], base_url: str) -> SwarmNodeRegistration:
    """A peer as its agent card describes it; the swarm extension carries its id, group and tier."""
    params: dict[str, Any] = {}
    for ext in (card.get("capabilities") or {}).get("extensions") or []:
        if isinstance(ext, dict) and ext.get("uri") == SWARM_EXTENSION_URI:
            params = ext.get("params") or {}
    node_id = params.get("nodeId")
    if not isinstance(node_id, str) or not node_id:
        raise LookupError(f"{base_url} is an A2A agent but not a cortex-node (no swarm extension in its card)")
    try:
        tier = NodeTier(params.get("tier", "root"))
    except ValueError:
        tier = NodeTier.UNPRIVILEGED
    reg = SwarmNodeRegistration(
        id=node_id, name=str(card.get("name") or node_id), endpoint=base_url, a2a_endpoint=f"{base_url}/a2a",
        tier=tier, version=str(card.get("version") or ""), group_name=str(params.get("group") or "default"),
    )
    try:
        check_peer_registration(reg, "card")
    except ValueError as exc:
        raise LookupError(f"{base_url} has an agent card this node refuses: {exc}") from None
    return reg


def check_peer_registration(reg: SwarmNodeRegistration, where: str) -> None:
    """What a peer says of itself, bounded and its addresses checked (its JSON-RPC URL is its own
    base URL + /a2a). Normalises the URLs in place. Raises ValueError naming the field."""
    if not reg.id or len(reg.id) > MAX_NAME_CHARS:
        raise ValueError(f"{where}.id must be 1 to {MAX_NAME_CHARS} characters")
    if not reg.name or len(reg.name) > MAX_NAME_CHARS:
        raise ValueError(f"{where}.name must be 1 to {MAX_NAME_CHARS} characters")
    for key, value in (("groupName", reg.group_name), ("version", reg.version), ("bootId", reg.boot_id or "")):
        if len(value) > MAX_SHORT_CHARS:
            raise ValueError(f"{where}.{key} must be at most {MAX_SHORT_CHARS} characters")
    if len(reg.capabilities) > MAX_CAPABILITIES or any(len(c) > MAX_SHORT_CHARS for c in reg.capabilities):
        raise ValueError(f"{where}.capabilities: at most {MAX_CAPABILITIES} of at most {MAX_SHORT_CHARS} characters")
    if len(reg.labels) > MAX_LABELS or any(len(k) > MAX_LABEL_CHARS or len(v) > MAX_LABEL_CHARS
                                           for k, v in reg.labels.items()):
        raise ValueError(f"{where}.labels: at most {MAX_LABELS} of at most {MAX_LABEL_CHARS} characters each")
    reg.endpoint = peer_base_url(reg.endpoint, f"{where}.endpoint")
    reg.a2a_endpoint = peer_rpc_url(reg.a2a_endpoint, reg.endpoint, f"{where}.a2aEndpoint")



def _changed(row: Any, reg: SwarmNodeRegistration) -> bool:
    return (row.endpoint != reg.endpoint or row.name != reg.name or row.tier is not reg.tier
            or row.group_name != reg.group_name or row.version != reg.version or row.labels != reg.labels
            or row.capabilities != reg.capabilities
            or (reg.boot_id is not None and row.boot_id != reg.boot_id)
            or (reg.a2a_endpoint is not None and row.a2a_endpoint != reg.a2a_endpoint))
