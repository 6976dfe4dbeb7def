"""JSON encoding for the hot paths (every API answer, every A2A response): orjson when the
document allows it, the standard library otherwise (non-string keys, integers beyond 64 bits).
Parsing stays with the standard library: orjson turns big integers into floats, which would
change a JSON-RPC id."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(doc: Any) -> bytes:
    """Compact JSON; NaN and infinities become null (they are not JSON). Raises TypeError for
    what JSON cannot hold."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
