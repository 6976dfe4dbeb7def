"""The built-in ``echo`` agent: the smallest program that speaks the agent protocol.

It answers its instruction with ``echo: <instruction>``, then echoes every forwarded message
(one JSON object a line on stdin) as ``echo: <json>`` until stdin closes. An attached agent's
stdin closes right after the instruction, so it answers and exits; a detached one keeps going
until its input ends or it is terminated. It imports nothing of cortex_node: agent programs are
separate processes.

Usage: python -m cortex_node.kernel.echo_agent [--instruction=TEXT]   (else: first stdin line)
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="echo_agent", description="Echo the instruction and each message.")
    parser.add_argument("--instruction", help="the instruction; without it, the first line of stdin")
    args = parser.parse_args(argv)
    instruction = args.instruction
    if instruction is None:
        instruction = sys.stdin.readline().rstrip("\n")
    print(f"echo: {instruction}", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            print("echo_agent: ignoring a line that is not JSON", file=sys.stderr, flush=True)
            continue
        print(f"echo: {json.dumps(message, ensure_ascii=False, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
