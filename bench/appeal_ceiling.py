"""How much appeal quality-tuning can add: the world's judged appeal of a curated set as it is,
as the model's frozen stages give it back (`Backend.reconstruct`: an autoencoder's blur, a
tokenizer's codebook), and of the model's own images for the same captions.

Quality-tuning moves a generator toward the curated images, but only as far as the stages it
leaves frozen can draw them: the second figure is its ceiling. A tuned model close to it needs
a better first stage, not more tuning.

    python bench/appeal_ceiling.py runs/demo/masked/pre --data runs/demo/curation/specialist
    python bench/appeal_ceiling.py runs/demo/latent/pre runs/demo/latent/qt --data ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from emu_cli.checkpoint.folder import load_checkpoint
from emu_cli.data import index_dataset
from emu_cli.data.dataset import TrainingDataset, to_images
from emu_cli.data.sources import SampleIndex
from emu_cli.runtime import quiet_libraries
from emu_cli.world.judges import WorldJudges


def measure(model_path: Path, data: Path, judges: WorldJudges, args) -> dict:
    backend, model, _ = load_checkpoint(model_path)
    model.to(args.device)
    everything = index_dataset(data)
    index = SampleIndex(everything.source, everything.samples[: args.limit], everything.rejected)
    captions = [s.caption for s in index.samples]
    with torch.no_grad():
        generated = backend.sample(
            model,
            captions,
            steps=args.steps,
            guidance=backend.guidance(args.guidance),
            seeds=list(range(len(captions))),
            device=torch.device(args.device),
        )
        resolution = generated[0].width  # the size the model draws at
        # The curated images as quality-tuning sees them, at the size the model draws at.
        view = TrainingDataset(index, resolution, random_flip=False)
        batch = torch.stack([view[i][0] for i in range(len(view))]).to(args.device)
        originals = to_images(batch)
        reconstructed = to_images(backend.reconstruct(model, batch))
    return {
        "model": str(model_path),
        "images": len(index.samples),
        "resolution": resolution,
        "curated": float(np.mean(judges.appeal(originals))),
        "through_frozen_stages": float(np.mean(judges.appeal(reconstructed))),
        "generated": float(np.mean(judges.appeal(generated))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True, help="the curated set")
    parser.add_argument("--limit", type=int, default=200, help="curated images used")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, help="default: the backend's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    quiet_libraries()
    judges = WorldJudges.load()
    rows = [measure(path, args.data, judges, args) for path in args.models]
    print(f"{'model':40} {'curated':>8} {'frozen':>8} {'generated':>9}")
    for row in rows:
        print(
            f"{row['model']:40} {row['curated']:8.3f} {row['through_frozen_stages']:8.3f} "
            f"{row['generated']:9.3f}"
        )
    print(f"({rows[0]['images']} curated images at {rows[0]['resolution']} px; appeal judged 0-1)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
