"""Peak memory of quality-tuning with gradient checkpointing against without, same model, data
and batch, each run a child process (its peak resident memory, from the kernel), one run each.

The model is the `small` latent preset, pre-trained for one step a stage on world images (its
weights do not matter for memory). On a CPU the peak is the process's resident set, torch's
allocations included; on a GPU, pass `--device cuda` and read torch's peak from the summary.

    python bench/activation_memory.py --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def emu(*args: object) -> int:
    """Run `emu` in a child; its peak resident memory in MiB."""
    child = subprocess.Popen([sys.executable, "-m", "emu_cli", *map(str, args)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"emu {args[0]} failed (status {status})")
    return usage.ru_maxrss // 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        emu("data", "synth", "--num-images", 256, "--out", root / "data", "--clean")
        emu("pretrain", "--backend", "latent", "--preset", "small", "--data", root / "data",
            "--out", root / "model", "--steps", 1, "--batch-size", 4,
            "--device", args.device)  # fmt: skip
        peaks = {}
        for flag in ("--no-gradient-checkpointing", "--gradient-checkpointing"):
            peaks[flag] = emu("quality-tune", "--model", root / "model", "--data", root / "data",
                              "--out", root / flag, "--steps", args.steps, "--batch-size",
                              args.batch_size, "--no-early-stopping", "--device", args.device,
                              flag)  # fmt: skip
    plain, checkpointed = peaks.values()
    print(f"latent small, batch {args.batch_size}, {args.device}: peak memory {plain} MiB "
          f"without gradient checkpointing, {checkpointed} MiB with: "
          f"ratio {checkpointed / plain:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
