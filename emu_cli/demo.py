"""``make demo``: the main job, run through the same CLI commands a user types.

Today: synthesize a pool of the built-in world, pre-train every installed backend on it, and
generate a grid for fixed prompts. The world, curation and quality-tuning issues grow it into the
paper's whole recipe. Stages already done are reused when it is run again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

SCALES = {
    # preset, pool size, image size, steps per stage
    "quick": {
        "preset": "small",
        "pool": 2000,
        "size": 64,
        "steps": {"autoencoder": 300, "denoiser": 900},
    },
    "tiny": {
        "preset": "tiny",
        "pool": 300,
        "size": 32,
        "steps": {"autoencoder": 40, "denoiser": 60},
    },
    "gpu": {"preset": "base", "pool": 200_000, "size": 256, "steps": {}},
}
PROMPTS = [
    "a red star on a sunset background",
    "a blue circle on a sand background",
    "a yellow heart on a night background",
    "a green triangle on a snow background",
]


def emu(*args: object) -> None:
    command = [sys.executable, "-m", "emu_cli", *map(str, args)]
    print("$ emu " + shlex.join(command[3:]), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--scale", choices=sorted(SCALES), default="quick")
    parser.add_argument("--backends", nargs="*", help="default: every installed backend")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    from emu_cli.plugins import get_backends

    backends = args.backends or sorted(get_backends())
    out: Path = args.out
    pool = out / "pool"
    if not (pool / "metadata.jsonl").is_file():
        emu(
            "data",
            "synth",
            "--n",
            scale["pool"],
            "--size",
            scale["size"],
            "--seed",
            0,
            "--out",
            pool,
        )
    results = []
    for name in backends:
        started = time.perf_counter()
        run = out / name / "pre"
        config = out / name / "pretrain.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        stages = "".join(
            f"  {stage}: {{steps: {steps}}}\n" for stage, steps in scale["steps"].items()
        )
        config.write_text(f"checkpoint_every: 200\npreview_every: 300\nstages_recipe:\n{stages}")
        resume = ["--resume", "latest"] if (run / "stages").is_dir() else []
        emu(
            "pretrain",
            "--backend",
            name,
            "--preset",
            scale["preset"],
            "--data",
            pool,
            "--out",
            run,
            "--config",
            config,
            *resume,
        )
        emu(
            "generate",
            "--model",
            run,
            *PROMPTS,
            "-n",
            4,
            "--steps",
            25,
            "--guidance",
            5,
            "--seed",
            0,
            "--out",
            out / name / "samples",
        )
        provenance = json.loads((run / "emu.json").read_text())
        results.append(
            {
                "backend": name,
                "steps": provenance["steps"],
                "holdout_metrics": provenance.get("holdout_metrics", {}),
                "grid": str(out / name / "samples" / "grid.png"),
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    (out / "pretrain.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'backend':10} {'steps':28} {'wall s':>8}  samples")
    for row in results:
        steps = ", ".join(f"{k} {v}" for k, v in row["steps"].items())
        print(f"{row['backend']:10} {steps:28} {row['wall_s']:8.1f}  {row['grid']}")


if __name__ == "__main__":
    main()
