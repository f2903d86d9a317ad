"""Whole-process time of `emu quality-tune` against diffusers' own training example on the same
adopted Stable Diffusion folder and the same data, alternated, with the median ratio.

The peer is `examples/text_to_image/train_text_to_image.py` from a diffusers checkout of the
installed version's line (pass its path; nothing of it is kept in this repository). Both train
the same tiny SD folder (`emu_latent_diffusion.foreign`, the adoption tests' model) on the same
world images at 64 px, batch 32, for the same steps, in float32, without validation, and save
a pipeline at the end. Each pair runs emu, then the peer (the next pair the other way round);
`--steps 1` pairs, run first, show each command's fixed cost (start-up, indexing, encoding,
saving) with one step in it.

    python bench/qt_vs_peer.py --peer ~/diffusers/examples/text_to_image/train_text_to_image.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emu_latent_diffusion.foreign import save_tiny_stable_diffusion


def timed(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return time.perf_counter() - started


def commands(args: argparse.Namespace, root: Path, steps: int, run: str) -> dict[str, list[str]]:
    emu = [sys.executable, "-m", "emu_cli", "quality-tune", "--model", str(root / "sd"),
           "--data", str(root / "data"), "--out", str(root / f"emu-{run}"), "--steps", str(steps),
           "--batch-size", str(args.batch_size), "--no-early-stopping",
           "--device", "cpu"]  # fmt: skip
    peer = [sys.executable, str(args.peer), "--pretrained_model_name_or_path", str(root / "sd"),
            "--train_data_dir", str(root / "data"), "--caption_column", "text",
            "--resolution", "64", "--train_batch_size", str(args.batch_size),
            "--max_train_steps", str(steps), "--output_dir", str(root / f"peer-{run}"),
            "--learning_rate", "1e-4", "--checkpointing_steps", "100000"]  # fmt: skip
    return {"emu": emu, "peer": peer}


def pairs(args: argparse.Namespace, root: Path, steps: int, count: int) -> list[dict[str, float]]:
    results = []
    for n in range(count):
        runs = commands(args, root, steps, f"{steps}-{n}")
        order = ["emu", "peer"] if n % 2 == 0 else ["peer", "emu"]
        seconds = {name: timed(runs[name], root / f"{name}-{steps}-{n}.log") for name in order}
        print(f"  steps {steps}, pair {n + 1}: emu {seconds['emu']:.1f} s, peer "
              f"{seconds['peer']:.1f} s, ratio {seconds['peer'] / seconds['emu']:.3f}",
              flush=True)  # fmt: skip
        results.append(seconds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peer = "diffusers' examples/text_to_image/train_text_to_image.py"
    parser.add_argument("--peer", type=Path, required=True, help=peer)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_tiny_stable_diffusion(root / "sd")
        subprocess.run([sys.executable, "-m", "emu_cli", "data", "synth", "--num-images",
                        str(args.images), "--out", str(root / "data"), "--clean", "--seed", "1"],
                       check=True, capture_output=True)  # fmt: skip
        print(f"{args.images} world images at 64 px, batch {args.batch_size}, float32, 1 process")
        fixed = pairs(args, root, 1, 2)
        full = pairs(args, root, args.steps, args.pairs)
    ratio = statistics.median(p["peer"] / p["emu"] for p in full)
    print(f"one step (fixed cost): emu median {statistics.median(p['emu'] for p in fixed):.1f} s, "
          f"peer {statistics.median(p['peer'] for p in fixed):.1f} s")  # fmt: skip
    print(f"{args.steps} steps: emu median {statistics.median(p['emu'] for p in full):.1f} s, "
          f"peer {statistics.median(p['peer'] for p in full):.1f} s; "
          f"median ratio (peer / emu) {ratio:.3f} (target >= 1.5)")  # fmt: skip


if __name__ == "__main__":
    main()
