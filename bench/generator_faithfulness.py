"""How recognisable a pre-trained model's images are to the world's faithfulness judge.

Generates images for captions of the held-in subjects (random colors and backgrounds) and
prints the judge's accuracy per attribute next to chance, and the mean judged appeal.

    python bench/generator_faithfulness.py runs/pixel/pre --per-subject 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emu_cli.runtime import quiet_libraries
from emu_cli.world.validation import validate_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--per-subject", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    quiet_libraries()
    result = validate_generator(
        args.model,
        per_subject=args.per_subject,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        device=args.device,
    )
    print(f"{'attribute':12} {'accuracy':>9} {'chance':>7}")
    for name, chance in result["chance"].items():
        print(f"{name:12} {result[f'{name}_accuracy']:9.3f} {chance:7.3f}")
    print(f"{'all three':12} {result['all_accuracy']:9.3f}")
    print(f"mean judged appeal {result['mean_appeal']:.3f} over {result['images']} images")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
