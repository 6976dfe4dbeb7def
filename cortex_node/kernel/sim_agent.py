"""The built-in ``sim`` agent: a simulated LLM agent for demos, tests and benchmarks.

Everything it reports is synthetic: no model is called. Over ``--seconds`` (default 3, or
CORTEX_SIM_SECONDS) it "thinks" in a few steps, printing one usage line per step
(``{"cortex": "usage", "tokensIn", "tokensOut", "costUsd", "toolCalls"}``), then prints its
answer. The figures are deterministic: they depend only on the instruction and ``--seed``, never
on the time taken, so tests may run it for a fraction of a second and still know the numbers.

Usage: python -m cortex_node.kernel.sim_agent [--instruction=TEXT] [--seconds=S] [--steps=N] [--seed=N]
(without --instruction it reads the first line of stdin)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time

DEFAULT_SECONDS = 3.0
DEFAULT_STEPS = 4
# synthetic prices, USD per million tokens (the order of a mid-sized hosted model)
PRICE_IN_PER_MTOK = 3.0
PRICE_OUT_PER_MTOK = 15.0


def simulate(instruction: str, *, steps: int, seed: int) -> list[dict]:
    """The usage line of each step; the same for the same (instruction, steps, seed)."""
    digest = hashlib.sha256(f"{seed}\0{instruction}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    lines = []
    for _ in range(steps):
        tokens_in = 200 + len(instruction) + rng.randrange(800)
        tokens_out = 50 + rng.randrange(400)
        lines.append({
            "cortex": "usage", "tokensIn": tokens_in, "tokensOut": tokens_out,
            "costUsd": round((tokens_in * PRICE_IN_PER_MTOK + tokens_out * PRICE_OUT_PER_MTOK) / 1e6, 6),
            "toolCalls": rng.randrange(2),
        })
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sim_agent", description="A simulated LLM agent (synthetic usage).")
    parser.add_argument("--instruction", help="the instruction; without it, the first line of stdin")
    # a string default goes through type=float too, so a bad CORTEX_SIM_SECONDS is a usage error
    parser.add_argument("--seconds", type=float, default=os.environ.get("CORTEX_SIM_SECONDS", str(DEFAULT_SECONDS)),
                        help=f"how long to run (default: CORTEX_SIM_SECONDS or {DEFAULT_SECONDS})")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="usage lines to report")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.seconds < 0 or args.steps < 1:
        parser.error("--seconds must be >= 0 and --steps >= 1")
    instruction = args.instruction
    if instruction is None:
        instruction = sys.stdin.readline().rstrip("\n")

    usage = simulate(instruction, steps=args.steps, seed=args.seed)
    for step in usage:
        time.sleep(args.seconds / args.steps)
        print(json.dumps(step), flush=True)
    tokens = sum(u["tokensIn"] + u["tokensOut"] for u in usage)
    print(f"sim: answered {instruction!r} in {args.steps} steps, {tokens} tokens (synthetic)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
