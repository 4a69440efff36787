"""The long fuzz pass: the same suite as CI's bounded one (tests/fuzz/), with more examples and a fresh seed.

    python -m bench.fuzz [--examples 200] [--seed N] [-- extra pytest arguments]

Prints the seed, so a failure reruns exactly with ``--seed``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import pytest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=200, help="examples per operation and property")
    ap.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    args, extra = ap.parse_known_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    os.environ["FUZZ_EXAMPLES"] = str(args.examples)
    os.environ["FUZZ_SEED"] = str(seed)
    print(f"fuzz: {args.examples} examples per operation, seed {seed}", flush=True)
    return pytest.main(["tests/fuzz", "-q", "-p", "no:cacheprovider", *[a for a in extra if a != "--"]])


if __name__ == "__main__":
    sys.exit(main())
