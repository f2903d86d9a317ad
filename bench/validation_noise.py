"""How noisy one early-stopping validation reading is: the same model's validation prompt set
generated with several seed sets and judged each time, as `emu quality-tune` judges it.

The spread across seed sets is the noise in every point of a quality-tuning curve; with it one
can see how often two readings of an unchanged model differ by more than the faithfulness
margin, and choose the validation set's size.

    python bench/validation_noise.py runs/demo/masked/pre runs/demo/pixel/pre
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import NormalDist

import numpy as np

from emu_cli.checkpoint.folder import load_checkpoint
from emu_cli.evaluate.prompts import load_prompts
from emu_cli.plugin import registry
from emu_cli.plugin.judge import Judge
from emu_cli.runtime import quiet_libraries
from emu_cli.training.quality_tune import EarlyStoppingSettings
from emu_cli.training.validation import judged_reading


def readings(
    model_path: Path, prompts: list[str], judge: Judge, args: argparse.Namespace
) -> np.ndarray:
    """(seed sets, 2): mean judged appeal and faithfulness of each seed set's images. Seed set
    0 is the one quality-tuning validates with (seed 0 + i for prompt i); each is a
    reading as quality-tuning takes it (`judged_reading`)."""
    backend, model, _ = load_checkpoint(model_path)
    model.to(args.device)
    rows = []
    for seed_set in range(args.seed_sets):
        _, appeal, faithfulness = judged_reading(
            backend, model, judge, prompts,
            steps=args.steps, guidance=backend.guidance(args.guidance), seed=1000 * seed_set,
        )  # fmt: skip
        rows.append((appeal, faithfulness))
    return np.array(rows)


def chance_of_a_fall(spread: float, margin: float) -> float:
    """P(reading B < reading A - margin) for two independent readings of one model (normal)."""
    if spread == 0:
        return 0.0
    return NormalDist(0.0, spread * 2**0.5).cdf(-margin)


def main() -> None:
    # what `emu quality-tune` validates a model of the built-in world with by default
    validation = EarlyStoppingSettings().resolved(True, "bench/validation_noise.py")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--prompts", default=validation.prompts)
    parser.add_argument("--seed-sets", type=int, default=5)
    parser.add_argument("--steps", type=int, default=validation.sample_steps)
    parser.add_argument("--guidance", type=float, help="default: the backend's")
    parser.add_argument("--judge", default=validation.judge)
    parser.add_argument(
        "--margin", type=float, default=validation.faithfulness_margin, help="faithfulness"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.seed_sets < 2:
        parser.error(f"--seed-sets must be at least 2 to measure a spread, got {args.seed_sets}")
    quiet_libraries()
    prompts = [p.text for p in load_prompts(args.prompts)]
    judge = registry.judge(args.judge)
    results = []
    print(f"{'model':40} {'appeal':>13} {'faithfulness':>13} {'P(fall > margin)':>17}")
    for path in args.models:
        values = readings(path, prompts, judge, args)
        mean, spread = values.mean(axis=0), values.std(axis=0, ddof=1)
        fall = chance_of_a_fall(float(spread[1]), args.margin)
        print(
            f"{str(path):40} {mean[0]:6.3f}+-{spread[0]:.3f} {mean[1]:6.3f}+-{spread[1]:.3f} "
            f"{fall:17.3f}"
        )
        results.append({
            "model": str(path), "prompts": len(prompts), "seed_sets": args.seed_sets,
            "appeal_mean": float(mean[0]), "appeal_sd": float(spread[0]),
            "faithfulness_mean": float(mean[1]), "faithfulness_sd": float(spread[1]),
            "margin": args.margin, "chance_of_a_fall": fall,
        })  # fmt: skip
    print(f"({len(prompts)} prompts, {args.seed_sets} seed sets; +- is the standard deviation)")
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
