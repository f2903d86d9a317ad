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

from train_throughput import bench_parser, compare_recipes, device_name, every_stage, report

from emu_cli.runtime import quiet_libraries


def measure(backend, preset: str, stage: str, args: argparse.Namespace) -> dict:
    rates = compare_recipes(
        backend, preset, stage, args, {"mixed_precision": "no"}, {"mixed_precision": "bf16"}
    )
    return {
        "backend": backend.name,
        "stage": stage,
        "preset": preset,
        "resolution": rates["resolution"],
        "steps": args.steps,
        "device": device_name(args.device),
        "float32_images_per_s": rates["base_images_per_s"],
        "bf16_images_per_s": rates["trial_images_per_s"],
        "ratio": rates["ratio"],
        "float32_loss": rates["base_loss"],
        "bf16_loss": rates["trial_loss"],
    }


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], "default: every stage of each backend")
    args = parser.parse_args()
    quiet_libraries()
    results = [measure(backend, args.preset, stage, args) for backend, stage in every_stage(args)]
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
