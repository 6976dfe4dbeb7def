"""The banner shown while the node does not answer. The last data stays on screen below it."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import Static


class ConnectionBanner(Static):
    DEFAULT_CSS = """
    ConnectionBanner { height: auto; display: none; background: $error; color: $text; padding: 0 1;
                       text-style: bold; }
    ConnectionBanner.-visible { display: block; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._reason = ""
        self._retry_at = 0.0

    def on_mount(self) -> None:
        # The countdown is the only thing here that reads the clock; it only runs while shown.
        self._ticker = self.set_interval(1.0, self._render_countdown, pause=True)

    def show_lost(self, reason: str, retry_in_s: float) -> None:
        self._reason = reason
        self._retry_at = time.monotonic() + retry_in_s
        self.add_class("-visible")
        self._render_countdown()
        self._ticker.resume()

    def hide(self) -> None:
        self.remove_class("-visible")
        self._ticker.pause()

    def _render_countdown(self) -> None:
        left = max(0, round(self._retry_at - time.monotonic()))
        when = f"retrying in {left} s" if left else "retrying now"
        # Text, not markup: an error message may contain brackets
        self.update(Text(f"disconnected — {when}  (r: retry now)\n{self._reason}"))
