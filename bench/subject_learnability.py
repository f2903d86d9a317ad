"""Can an image tower learn the world's subjects from a pool at all? Trains it to name the
subject its caption names (supervised: the strongest signal a caption gives, stronger than
CLIP's contrastive one) on pool rows ``[0, --train)``, then reports how often it names the true
subject of the junk-free rows after them, next to chance and the world's judge on the same
images (trained on renders with known truth: the ceiling).

If a tower cannot learn subjects with their labels, no contrastive objective on the same pairs
will teach them, and the caption check's subject swaps stay out of reach (docs/curation.md).

    python bench/subject_learnability.py pool20k --tower clip --steps 400
    python bench/subject_learnability.py pool20k --tower judge --steps 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from emu_cli.curate.clip import SMALL_CLIP
from emu_cli.data.dataset import training_view
from emu_cli.world.concepts import SUBJECTS
from emu_cli.world.judges import INPUT, JudgeNet, WorldJudges, parse_caption
from emu_cli.world.validation import pool_records


class ClipTower(nn.Module):
    """The offline CLIP's image tower (as ``emu filter train-clip`` builds it) and a linear
    subject head on its embedding."""

    def __init__(self):
        super().__init__()
        import open_clip

        self.visual = open_clip.CLIP(**SMALL_CLIP).visual
        self.head = nn.Linear(SMALL_CLIP["embed_dim"], len(SUBJECTS))
        self.size = SMALL_CLIP["vision_cfg"]["image_size"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(images))


class JudgeTower(nn.Module):
    """The world judge's architecture, untrained, with only its subject head used."""

    def __init__(self):
        super().__init__()
        self.net = JudgeNet()
        self.size = INPUT

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)["subject"]


TOWERS = {"clip": ClipTower, "judge": JudgeTower}


def decode(pool: Path, records: list[dict]) -> list[Image.Image]:
    return [
        Image.open(pool / r["file_name"]).convert("RGB")
        for r in tqdm(records, desc="decode", leave=False)
    ]


def views(images: list[Image.Image], size: int) -> torch.Tensor:
    """The images as training sees them (``emu filter train-clip`` included), in [-1, 1]."""
    return torch.stack([training_view(image, (size, size), False) for image in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", type=Path, help="a pool written by `emu data synth`")
    parser.add_argument("--tower", choices=sorted(TOWERS), default="clip")
    parser.add_argument("--train", type=int, default=10_000, help="rows to train on")
    parser.add_argument("--test", type=int, default=3_000, help="rows after them to test on")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    records = pool_records(args.pool)
    if len(records) < args.train + 1:
        raise SystemExit(f"pool '{args.pool}' has {len(records)} rows; --train is {args.train}")
    train = records[: args.train]
    test = [r for r in records[args.train : args.train + args.test] if not r["junk"]]
    tower = TOWERS[args.tower]()
    inputs = views(decode(args.pool, train), tower.size)
    # What the captions say, wrong ones included: what a CLIP trained on the pool is told.
    labels = torch.tensor([SUBJECTS.index(parse_caption(r["text"])["subject"]) for r in train])
    optimizer = torch.optim.AdamW(tower.parameters(), lr=args.lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.steps
    )
    generator = torch.Generator().manual_seed(0)
    started, losses = time.perf_counter(), []
    bar = tqdm(range(args.steps), desc=f"train {args.tower}")
    for _ in bar:
        index = torch.randint(0, len(inputs), (args.batch_size,), generator=generator)
        flip = torch.rand(len(index), generator=generator) < 0.5  # a mirror shows the same subject
        batch = torch.where(flip[:, None, None, None], inputs[index].flip(3), inputs[index])
        loss = nn.functional.cross_entropy(tower(batch), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    seconds = time.perf_counter() - started
    truth = np.array([r["subject"] for r in test])
    tower.eval()
    images = decode(args.pool, test)  # once, for the tower and the judge
    held_out = views(images, tower.size)
    with torch.no_grad():
        named = torch.cat(
            [tower(held_out[i : i + 256]).argmax(1) for i in range(0, len(test), 256)]
        )
    accuracy = float((np.array(SUBJECTS)[named.numpy()] == truth).mean())
    judged = np.array(WorldJudges.load().judge(images).attributes["subject"])
    result = {
        "tower": args.tower,
        "train_rows": args.train,
        "steps": args.steps,
        "passes": round(args.steps * args.batch_size / args.train, 1),
        "final_train_loss": round(float(np.mean(losses[-50:])), 3),
        "held_out_images": len(test),
        "held_out_accuracy": round(accuracy, 4),
        "chance": round(1 / len(SUBJECTS), 4),
        "world_judge_accuracy": round(float((judged == truth).mean()), 4),
        "train_seconds": round(seconds, 1),
    }
    print(
        f"{args.tower} tower, {args.steps} steps ({result['passes']} passes): names the subject of "
        f"{accuracy:.1%} of {len(test)} held-out images (chance {1 / len(SUBJECTS):.1%}, the "
        f"world judge {result['world_judge_accuracy']:.1%}); train loss "
        f"{result['final_train_loss']} (ln 8 = 2.079)"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
