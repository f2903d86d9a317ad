"""Images/s of emu's trainer with bf16 autocast against full precision, per backend and stage,
one process, one run.

Each stage trains the same freshly built model three times on the same synthesized data:
float32, bf16, float32; the ratio uses the mean of the two float32 runs, so warm-up and drift
favour neither. The final losses are printed beside the rates: bf16 must not change what is
learned. On a CPU without native bf16 arithmetic the ratio falls below 1, which is why
`make demo` asks for bf16 only where the CPU has it (``emu_cli.demo.training_precision``).

    python bench/precision_speedup.py                      # every stage of every backend
    python bench/precision_speedup.py --backend latent --stage autoencoder
    python bench/precision_speedup.py --device cuda --batch-size 128   # on a GPU
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from train_throughput import (
    bench_parser,
    bench_recipe,
    device_name,
    report,
    trainer_rate,
    trainer_steps,
)

from emu_cli.data import index_dataset
from emu_cli.plugins import get_backend, get_backends
from emu_cli.runtime import quiet_libraries
from emu_cli.world.synth import synthesize


def run(backend, preset: str, stage: str, precision: str, index, folder: Path, args) -> dict:
    resolution = backend.stage(stage).defaults[preset]["resolution"]
    recipe = bench_recipe(args, resolution, mixed_precision=precision)
    # accelerate keeps one precision per process; the runs here alternate it.
    AcceleratorState._reset_state(reset_partial_state=True)
    torch.manual_seed(0)
    model = backend.build(preset, {})
    rate = trainer_rate(backend, model, stage, recipe, index, folder, args.device)
    return {"images_per_s": rate, "loss": trainer_steps(folder)[-1]["loss"]}


def measure(backend, preset: str, stage: str, args: argparse.Namespace) -> dict:
    resolution = backend.stage(stage).defaults[preset]["resolution"]
    with tempfile.TemporaryDirectory() as folder:
        index = index_dataset(synthesize(512, Path(folder) / "data", seed=0, size=resolution))
        runs = [
            run(backend, preset, stage, precision, index, Path(folder) / f"run-{i}", args)
            for i, precision in enumerate(("no", "bf16", "no"))
        ]
    full = (runs[0]["images_per_s"] + runs[2]["images_per_s"]) / 2
    return {
        "backend": backend.name,
        "stage": stage,
        "preset": preset,
        "resolution": resolution,
        "steps": args.steps,
        "device": device_name(args.device),
        "float32_images_per_s": round(full, 1),
        "bf16_images_per_s": round(runs[1]["images_per_s"], 1),
        "ratio": round(runs[1]["images_per_s"] / full, 3),
        "float32_loss": runs[0]["loss"],
        "bf16_loss": runs[1]["loss"],
    }


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], "default: every stage of each backend")
    args = parser.parse_args()
    quiet_libraries()
    results = []
    for name in args.backend or sorted(get_backends()):
        backend = get_backend(name)
        for stage in [args.stage] if args.stage else backend.default_stages(args.preset, {}):
            results.append(measure(backend, args.preset, stage, args))
    columns = [
        ("float32_images_per_s", "fp32 img/s", ".1f"),
        ("bf16_images_per_s", "bf16 img/s", ".1f"),
        ("ratio", "ratio", ".3f"),
        ("float32_loss", "fp32 loss", ".4f"),
        ("bf16_loss", "bf16 loss", ".4f"),
    ]
    report(results, columns, args.json)


if __name__ == "__main__":
    main()
