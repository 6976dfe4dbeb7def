"""How numbers, ages and statuses look. One place, so every screen says the same thing the same way.

Statuses are always shown as a glyph, a colour AND the word: colour alone fails on monochrome
terminals and for colour-blind operators.
"""

from __future__ import annotations

from rich.text import Text

from cortex_tui.client.models import ts_ms

NODE_STATUS_STYLES: dict[str, tuple[str, str]] = {
    "online": ("●", "bold green"),
    "connected": ("●", "green"),
    "draining": ("◐", "yellow"),
    "degraded": ("▲", "dark_orange"),
    "disconnected": ("✖", "bold red"),
    "offline": ("○", "grey50"),
    "sealed": ("■", "magenta"),
}
# Problems first when sorting by status.
NODE_STATUS_RANK = {"disconnected": 0, "degraded": 1, "draining": 2, "sealed": 3, "offline": 4, "connected": 5,
                    "online": 6}

PROCESS_STATUS_STYLES: dict[str, str] = {
    "running": "green", "exited": "grey50", "failed": "red", "killed": "red", "unknown": "yellow",
}

DIRECTIVE_STATUS_STYLES: dict[str, str] = {
    "pending": "grey62", "dispatched": "cyan", "completed": "green", "failed": "bold red",
    "cancelled": "grey50", "timed_out": "yellow",
}

PRIORITY_STYLES: dict[str, str] = {"low": "grey50", "normal": "", "high": "yellow", "critical": "bold red"}


def node_status(status: str) -> Text:
    glyph, style = NODE_STATUS_STYLES.get(status, ("?", "yellow"))
    return Text(f"{glyph} {status}", style=style)


def styled(word: str, styles: dict[str, str]) -> Text:
    return Text(word, style=styles.get(word, ""))


def count(n: float) -> str:
    """12 -> '12', 12_345 -> '12.3k', 4_200_000 -> '4.2M'."""
    n = float(n)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}"
    return f"{n:.0f}"


def money(usd: float) -> str:
    return f"${usd:,.2f}" if abs(usd) >= 0.01 or usd == 0 else f"${usd:.4f}"


def memory(used_mb: float, total_mb: float) -> str:
    """Used/total in the total's unit: '95.2/128G', '330/512M'."""
    if total_mb <= 0:
        return "—"
    if total_mb >= 1024:
        return f"{used_mb / 1024:.1f}/{total_mb / 1024:.0f}G"
    return f"{used_mb:.0f}/{total_mb:.0f}M"


def age(ms: int | None) -> str:
    """Compact age: '0.8s', '42s', '3m05s', '2h14m', '3d04h'."""
    if ms is None:
        return "never"
    if ms < 10_000:  # tenths matter for fast heartbeats
        return f"{ms / 1000:.1f}s"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def heartbeat_age(ms: int | None, stale_after_ms: int) -> Text:
    """Yellow from half the stale limit, red at and past it: the node is about to be (or has
    been) marked disconnected."""
    if ms is None:
        return Text("never", style="grey50")
    style = "bold red" if ms >= stale_after_ms else "yellow" if ms >= stale_after_ms / 2 else ""
    return Text(age(ms), style=style)


def duration(ms: int) -> str:
    if ms <= 0:
        return "—"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    return age(ms)


def clock(iso: str | None) -> str:
    """'2026-11-26T10:19:22.421Z' -> '10:19:22' (UTC, as the node stores it)."""
    if not iso or len(iso) < 19:
        return "—"
    return iso[11:19]


def ago(iso: str | None, now_ms: int) -> str:
    at = ts_ms(iso)
    if at is None:
        return "—"
    return f"{age(max(0, now_ms - at))} ago"
