"""How well a CLIP checks the world's captions: wrong-caption recall at a false-reject rate, per
kind of swap, and how often it names an image's subject zero-shot (the same caption written once
per subject). ``--start``/``--stop`` pick pool rows, so a CLIP trained on one part of a pool can be
measured on images it never saw; ``--judge`` adds the world's supervised judge, the ceiling.

    python bench/caption_check.py runs/demo/curation/models/clip runs/demo/pool
    python bench/caption_check.py models/clip-first-half pool --start 2500 --judge
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from emu_cli.curate.clip import ClipEncoder
from emu_cli.world.judges import WorldJudges
from emu_cli.world.validation import caption_check, subject_zero_shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", help="a train-clip folder or open_clip name")
    parser.add_argument("pool", type=Path, help="a pool written by `emu data synth`")
    parser.add_argument("--start", type=int, default=None, help="first pool row (default 0)")
    parser.add_argument("--stop", type=int, default=None, help="row to stop before (default end)")
    parser.add_argument("--false-reject-rate", type=float, default=0.1)
    parser.add_argument("--judge", action="store_true", help="also the world's judge")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = slice(args.start, args.stop)
    scorers = {args.clip: ClipEncoder.load(args.clip).similarity}
    if args.judge:
        scorers["world judge"] = WorldJudges.load().caption_log_likelihood
    results = {
        name: {
            "caption_check": caption_check(args.pool, score, args.false_reject_rate, rows),
            "subject_zero_shot": subject_zero_shot(args.pool, score, rows),
        }
        for name, score in scorers.items()
    }
    for name, result in results.items():
        check, zero_shot = result["caption_check"], result["subject_zero_shot"]
        print(
            f"{name}: wrong captions caught {check['recall']['rate']:.1%} of "
            f"{check['recall']['of']} at {check['false_rejects']['rate']:.1%} false rejects "
            f"(subject swaps {check['subject_swap_recall']['rate']:.1%}, color swaps "
            f"{check['color_swap_recall']['rate']:.1%}); subject named zero-shot "
            f"{zero_shot['accuracy']:.1%} of {zero_shot['images']} "
            f"(chance {zero_shot['chance']:.1%})"
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
