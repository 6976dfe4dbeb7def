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
from cortex_node.swarm.state_sync import (
    MAX_KEYS_PER_NAMESPACE,
    MAX_SYNC_ENTRIES,
    check_state_key,
    check_state_value,
    entry_from_item,
)


def parse(payload: dict[str, Any], ctx: KindContext) -> SyncStatePayload:
    p = from_wire(SyncStatePayload, payload, "payload")  # a WireError is a ValueError naming the field
    if len(p.entries) > MAX_SYNC_ENTRIES or len(p.digest) > MAX_KEYS_PER_NAMESPACE:
        raise ValueError(f"payload.entries: at most {MAX_SYNC_ENTRIES} a round (payload.digest: at most "
                         f"{MAX_KEYS_PER_NAMESPACE}); send the rest in another sync_state")
    for key, item in p.entries.items():
        check_state_key(p.namespace, key)
        check_state_value(key, item.value)
    return p


async def run(ctx: KindContext, d: SwarmDirective, p: SyncStatePayload, timeout: float) -> Outcome:
    incoming = [entry_from_item(k, item) for k, item in p.entries.items()]
    applied = await ctx.state.merge(p.namespace, incoming)
    known = {k: (v.hlc, v.origin) for k, v in p.digest.items()}
    for entry in incoming:
        known[entry.key] = max(known.get(entry.key, (-1, "")), entry.version)
    back, more = await ctx.state.newer_than(p.namespace, known)
    return Outcome(DirectiveResultStatus.COMPLETED, SyncStateOutput(namespace=p.namespace, applied=applied,
                                                                    entries=back, more=more))


KIND = Kind(parse=parse, run=run)
