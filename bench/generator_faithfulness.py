"""How recognisable a pre-trained model's images are to the world's faithfulness judge.

Generates images for captions of the held-in subjects (random colors and backgrounds) and
prints the judge's accuracy per attribute next to chance, and the mean judged appeal.

    python bench/generator_faithfulness.py runs/pixel/pre --per-subject 16
    python bench/generator_faithfulness.py runs/pixel/pre --reference runs/demo/pool

``--reference POOL`` also judges the pool's own images at the model's size, captioned with what
they truly show: the score of a generator that drew its training data exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emu_cli.runtime import quiet_libraries
from emu_cli.world.validation import validate_generator, validate_pool_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--per-subject", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, help="default: the backend's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", type=Path, help="a pool folder to judge beside the model")
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
    rows = {"model": result}
    if args.reference:
        size = result["image_size"]
        rows["pool"] = result["reference"] = validate_pool_images(args.reference, size)
    print(f"{'attribute':12} " + " ".join(f"{name:>9}" for name in rows) + f" {'chance':>7}")
    for name, chance in result["chance"].items():
        values = " ".join(f"{row[f'{name}_accuracy']:9.3f}" for row in rows.values())
        print(f"{name:12} {values} {chance:7.3f}")
    print(f"{'all three':12} " + " ".join(f"{row['all_accuracy']:9.3f}" for row in rows.values()))
    print(f"{'appeal':12} " + " ".join(f"{row['mean_appeal']:9.3f}" for row in rows.values()))
    print(", ".join(f"{name}: {row['images']} images" for name, row in rows.items()))
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
