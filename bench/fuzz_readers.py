"""A longer run of the data readers' property tests (tests/test_data_fuzz.py): fresh random
hostile metadata lines and tar shards, many more of them than `make test` tries.

    python bench/fuzz_readers.py --examples 5000

Prints, per property, the examples tried and whether any failed (hypothesis shrinks a failure
to its smallest form and prints it). Record the figures in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROPERTIES = (
    "test_every_metadata_line_is_a_sample_or_a_named_reject",
    "test_a_hostile_shard_never_fails_indexing",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="per property")
    args = parser.parse_args()
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--hypothesis-show-statistics", "tests/test_data_fuzz.py",
         "-k", " or ".join(PROPERTIES)],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "EMU_FUZZ_EXAMPLES": str(args.examples), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    for name in PROPERTIES:
        section = output.split(f"::{name}:", 1)[-1]
        passing = re.search(r"(\d+) passing, (\d+) failing", section)
        tried, failed = passing.groups() if passing else ("?", "?")
        print(f"{name}: {tried} examples passed, {failed} failed")
    print(f"{time.perf_counter() - started:.0f} s; pytest exit code {result.returncode}")
    if result.returncode:
        print(output[-4000:])
        sys.exit(1)


if __name__ == "__main__":
    main()
