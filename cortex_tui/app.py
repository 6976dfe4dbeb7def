"""cortex-tui: placeholder until the Textual monitor lands (issue 5)."""

import sys


def main() -> None:
    print("cortex-tui: not yet available; use 'cortex swarm nodes' meanwhile", file=sys.stderr)
    sys.exit(1)
