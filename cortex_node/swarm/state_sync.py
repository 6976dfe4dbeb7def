"""The sync_state maps: one last-writer-wins map per namespace (memory, skills, config), ordered
by a hybrid logical clock. A version is (hlc, origin node id); the greater version wins on every
node alike, so any two nodes that exchange their entries end up equal."""

from __future__ import annotations

from typing import Any

from cortex_node.clock import Clock, HybridLogicalClock
from cortex_node.contracts import STATE_NAMESPACES, StateItem, StateRecord, StateVersion
from cortex_node.store.db import Store
from cortex_node.store.state import StateEntry, StateRepo

import json

MAX_KEY_CHARS = 256
MAX_VALUE_BYTES = 64 * 1024  # one entry's value, as JSON
MAX_SYNC_ENTRIES = 256  # entries one sync_state carries in, and answers with (the rest: another round)
MAX_KEYS_PER_NAMESPACE = 10_000  # a new key beyond this is refused


class StateFull(ValueError):
    """A namespace holds MAX_KEYS_PER_NAMESPACE keys: new ones are refused."""
SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey", "api_key", "credential", "private_key")


def check_state_key(namespace: str, key: str) -> None:
    """Raises ValueError naming what is wrong with a namespace or key."""
    if namespace not in STATE_NAMESPACES:
        raise ValueError(f"namespace must be one of {', '.join(STATE_NAMESPACES)}; got {namespace!r}")
    if not key or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"a state key must be 1 to {MAX_KEY_CHARS} characters")
    if namespace == "config" and any(w in key.lower().replace("-", "_") for w in SECRET_WORDS):
        raise ValueError(f"the config namespace never carries secrets; key {key!r} looks like one")


def check_state_value(key: str, value: Any) -> None:
    if len(json.dumps(value)) > MAX_VALUE_BYTES:
        raise ValueError(f"the value of {key[:80]!r} is larger than {MAX_VALUE_BYTES} bytes as JSON")


def entry_from_item(key: str, item: StateItem) -> StateEntry:
    return StateEntry(key, item.value, item.version.hlc, item.version.origin)


def item_of(entry: StateEntry) -> StateItem:
    return StateItem(entry.value, StateVersion(entry.hlc, entry.origin))


def state_record(namespace: str, entry: StateEntry) -> StateRecord:
    return StateRecord(namespace=namespace, key=entry.key, value=entry.value,
                       version=StateVersion(entry.hlc, entry.origin))


class StateSync:
    def __init__(self, store: Store, clock: Clock, node_id: str) -> None:
        self._store = store
        self._clock = clock
        self._node_id = node_id
        self._repo = StateRepo(store)
        self.hlc = HybridLogicalClock(clock)

    async def merge(self, namespace: str, entries: list[StateEntry]) -> int:
        """Apply entries that are newer than ours; returns how many were. Raises StateFull (and
        applies nothing) when new keys would take the namespace past its limit."""
        for entry in entries:
            self.hlc.observe(entry.hlc)
        now = self._clock.now_ms()

        def job(conn: Any) -> int:
            new_keys = sum(1 for e in entries if not StateRepo.has(conn, namespace, e.key))
            if new_keys and StateRepo.count(conn, namespace) + new_keys > MAX_KEYS_PER_NAMESPACE:
                raise StateFull(f"the {namespace} namespace holds its limit of {MAX_KEYS_PER_NAMESPACE} keys; "
                                "a new key is refused")
            return sum(StateRepo.put_if_newer(conn, namespace, e, now) for e in entries)

        return await self._store.write(job)

    async def put(self, namespace: str, key: str, value: Any) -> StateEntry:
        """A new version written on this node (REST)."""
        check_state_key(namespace, key)
        check_state_value(key, value)
        entry = StateEntry(key, value, self.hlc.now(), self._node_id)
        await self.merge(namespace, [entry])
        return entry

    async def get(self, namespace: str, key: str) -> StateEntry | None:
        return await self._repo.get(namespace, key)

    async def newer_than(self, namespace: str, known: dict[str, tuple[int, str]]) -> tuple[dict[str, StateItem], bool]:
        """Our entries the other side does not hold in a newer or equal version: at most
        MAX_SYNC_ENTRIES, oldest versions first, and whether more are left for another round."""
        ours = await self._repo.all(namespace)
        newer = sorted((e for k, e in ours.items() if e.version > known.get(k, (-1, ""))), key=lambda e: e.version)
        return {e.key: item_of(e) for e in newer[:MAX_SYNC_ENTRIES]}, len(newer) > MAX_SYNC_ENTRIES
