"""sync_state: merge the sender's entries of one namespace (last writer wins by HLC version) and
answer with ours that the sender lacks, so one exchange leaves both sides equal."""

from __future__ import annotations

from typing import Any

from cortex_node.contracts import (
    DirectiveResultStatus,
    SwarmDirective,
    SyncStateOutput,
    SyncStatePayload,
    from_wire,
)
from cortex_node.swarm.kinds import Kind, KindContext, Outcome
from cortex_node.swarm.state_sync import check_state_key, entry_from_item


def parse(payload: dict[str, Any], ctx: KindContext) -> SyncStatePayload:
    p = from_wire(SyncStatePayload, payload, "payload")  # a WireError is a ValueError naming the field
    for key in p.entries:
        check_state_key(p.namespace, key)
    return p


async def run(ctx: KindContext, d: SwarmDirective, p: SyncStatePayload, timeout: float) -> Outcome:
    incoming = [entry_from_item(k, item) for k, item in p.entries.items()]
    applied = await ctx.state.merge(p.namespace, incoming)
    known = {k: (v.hlc, v.origin) for k, v in p.digest.items()}
    for entry in incoming:
        known[entry.key] = max(known.get(entry.key, (-1, "")), entry.version)
    back = await ctx.state.newer_than(p.namespace, known)
    return Outcome(DirectiveResultStatus.COMPLETED, SyncStateOutput(namespace=p.namespace, applied=applied,
                                                                    entries=back))


KIND = Kind(parse=parse, run=run)
