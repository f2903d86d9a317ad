"""Images/s of `emu data synth` at 256 px, one process against all cores, in one run.

Target (the [world] issue): 50,000 images at 256 px in under 5 minutes on 2 cores, i.e. at least
167 images/s. Prints both rates, their ratio (parallel scaling) and the projected time for 50,000.

    python bench/synth_throughput.py --n 4000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from emu_cli.world.synth import synthesize

TARGET_IMAGES = 50_000
TARGET_SECONDS = 300


def rate(n: int, size: int, workers: int, fmt: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        synthesize(
            n, Path(folder) / "pool", seed=0, size=size, format=fmt, workers=workers, report=False
        )
        return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--format", default="webdataset", choices=["imagefolder", "webdataset"])
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    single = rate(args.n // cores, args.size, 1, args.format)
    parallel = rate(args.n, args.size, cores, args.format)
    projected = TARGET_IMAGES / parallel
    result = {
        "size": args.size,
        "format": args.format,
        "cores": cores,
        "n": args.n,
        "images_per_s_1_process": round(single, 1),
        f"images_per_s_{cores}_processes": round(parallel, 1),
        "scaling": round(parallel / single, 2),
        "projected_s_for_50000": round(projected, 1),
        "target_ratio": round(TARGET_SECONDS / projected, 2),
    }
    print(
        f"1 process: {single:.1f} img/s; {cores} processes: {parallel:.1f} img/s "
        f"(x{parallel / single:.2f}); 50,000 images in {projected:.0f} s "
        f"(target {TARGET_SECONDS} s: {TARGET_SECONDS / projected:.2f}x)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
