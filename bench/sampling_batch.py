"""How much a backend gains from sampling a batch at once: the same prompts and seeds drawn by
one `Backend.sample` call for all of them, then by one call per image, timed in one run, with
how many images came out identical (batching must keep image i a function of its own prompt
and seed; the batched arithmetic may move a last bit now and then).

    python bench/sampling_batch.py runs/demo/masked/qt runs/demo/pixel/qt --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from emu_cli.checkpoint.folder import load_checkpoint
from emu_cli.evaluate.prompts import load_prompts
from emu_cli.runtime import quiet_libraries


def measure(model_path: Path, prompts: list[str], args: argparse.Namespace) -> dict:
    backend, model, _ = load_checkpoint(model_path)
    device = torch.device("cpu")
    seeds = list(range(len(prompts)))
    options = {"steps": args.steps, "guidance": backend.guidance(args.guidance), "device": device}

    start = time.perf_counter()
    batched = backend.sample(model, prompts, seeds=seeds, **options)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = [
        backend.sample(model, [prompt], seeds=[seed], **options)[0]
        for prompt, seed in zip(prompts, seeds, strict=True)
    ]
    single_s = time.perf_counter() - start
    identical = sum(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(batched, single, strict=True)
    )
    return {
        "model": str(model_path),
        "backend": backend.name,
        "images": len(prompts),
        "steps": args.steps,
        "guidance": options["guidance"],
        "threads": torch.get_num_threads(),
        "one_call_per_image_s": round(single_s, 2),
        "batched_s": round(batched_s, 2),
        "speedup": round(single_s / batched_s, 2),
        "identical": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--prompts", default="builtin:validation")
    parser.add_argument("--steps", type=int, default=20, help="as quality-tuning validates")
    parser.add_argument("--guidance", type=float, help="default: each backend's")
    parser.add_argument("--threads", type=int, help="torch threads (the demo's jobs use 1)")
    args = parser.parse_args()
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = [p.text for p in load_prompts(args.prompts)]
    rows = [measure(model, prompts, args) for model in args.models]
    header = f"{'model':32} {'images':>6} {'one per call s':>14} {'batched s':>9} {'ratio':>6}"
    print(f"{header} identical")
    for r in rows:
        print(
            f"{r['model']:32} {r['images']:6} {r['one_call_per_image_s']:14.1f} "
            f"{r['batched_s']:9.1f} {r['speedup']:6.2f} {r['identical']}/{r['images']}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
