"""Images/s of emu's trainer under bf16 autocast with the math attention kernel against torch's
own choice (flash attention on a CPU), per backend and stage, one process, one run.

`Recipe.attention` "auto" picks the math kernel under bf16 on a CPU: torch's CPU flash-attention
backward is slow at the short sequences of these models. Each stage trains the same freshly
built model three times on the same synthesized data: torch's kernel, math, torch's kernel;
the ratio uses the mean of the two torch runs. The final losses are printed beside the rates:
the kernel must not change what is learned.

    python bench/attention_speedup.py --threads 1              # as each `make demo` job runs
    python bench/attention_speedup.py --backend masked --stage transformer
"""

from __future__ import annotations

import argparse

import torch
from train_throughput import bench_parser, compare_recipes, device_name, every_stage, report

from emu_cli.runtime import quiet_libraries


def measure(backend, preset: str, stage: str, args: argparse.Namespace) -> dict:
    rates = compare_recipes(
        backend,
        preset,
        stage,
        args,
        {"mixed_precision": "bf16", "attention": "torch"},
        {"mixed_precision": "bf16", "attention": "math"},
    )
    return {
        "backend": backend.name,
        "stage": stage,
        "preset": preset,
        "resolution": rates["resolution"],
        "steps": args.steps,
        "device": device_name(args.device),
        "threads": torch.get_num_threads(),
        "torch_images_per_s": rates["base_images_per_s"],
        "math_images_per_s": rates["trial_images_per_s"],
        "ratio": rates["ratio"],
        "torch_loss": rates["base_loss"],
        "math_loss": rates["trial_loss"],
    }


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], "default: every stage of each backend")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    results = [measure(backend, args.preset, stage, args) for backend, stage in every_stage(args)]
    columns = [
        ("torch_images_per_s", "torch img/s", ".1f"),
        ("math_images_per_s", "math img/s", ".1f"),
        ("ratio", "ratio", ".3f"),
        ("torch_loss", "torch loss", ".4f"),
        ("math_loss", "math loss", ".4f"),
    ]
    report(results, columns, args.json)


if __name__ == "__main__":
    main()
