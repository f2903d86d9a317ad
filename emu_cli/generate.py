"""``emu generate``: images for prompts from any backend's checkpoint, reproducible by seed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from emu_cli.checkpoint.folder import load_checkpoint, locate_checkpoint
from emu_cli.files import write_atomic
from emu_cli.images import save_grid
from emu_cli.lock import FolderLock
from emu_cli.runtime import quiet_libraries, resolve_device
from emu_cli.sampling import sample_in_batches

INDEX = "index.json"


@dataclass
class Generated:
    images: list[Path]
    grid: Path


def generate(
    model_path: str | Path,
    prompts: list[str],
    *,
    num_images: int = 4,
    steps: int = 25,
    guidance: float | None = None,
    seed: int = 0,
    out: Path,
    device: str = "auto",
) -> Generated:
    """Image ``j`` of prompt ``i`` uses seed ``seed + j``: the same seed gives the same images,
    and adding prompts does not change the images of the others. ``model_path``: a checkpoint
    folder or a Hub model repo (:func:`~emu_cli.checkpoint.folder.locate_checkpoint`).
    ``out`` is held by this run alone while it runs."""
    quiet_libraries()
    if num_images < 1:
        raise ValueError(f"--images-per-prompt must be at least 1, got {num_images}")
    if steps < 1:
        raise ValueError(f"--sampling-steps must be at least 1, got {steps}")
    out = Path(out)
    with FolderLock(out, "emu generate"):
        located = locate_checkpoint(model_path)
        backend, model, provenance = load_checkpoint(located.path)
        target = resolve_device(device)
        model.to(target)
        guidance = backend.guidance(guidance)
        all_prompts = [p for p in prompts for _ in range(num_images)]
        seeds = [seed + j for _ in prompts for j in range(num_images)]
        images = sample_in_batches(
            backend, model, all_prompts, steps=steps, guidance=guidance, seeds=seeds,
            device=target, description="generating",
        )  # fmt: skip
        _remove_earlier_outputs(out)
        written, records = [], []
        for k, (image, prompt, image_seed) in enumerate(
            zip(images, all_prompts, seeds, strict=True)
        ):
            path = out / f"{k // num_images:03d}-{k % num_images:02d}.png"
            image.save(path)
            written.append(path)
            records.append({"file_name": path.name, "text": prompt, "seed": image_seed})
        grid = save_grid(images, out / "grid.png", columns=num_images, captions=all_prompts)
        write_atomic(
            out / INDEX,
            json.dumps(
                {
                    "model": located.name,
                    "backend": backend.name,
                    "steps": steps,
                    "guidance": guidance,
                    "images": records,
                    "model_step": provenance.step,
                },
                indent=2,
            ),
        )
        return Generated(written, grid)


def _remove_earlier_outputs(out: Path) -> None:
    """What an earlier ``emu generate`` wrote in ``out`` (its index names it), so that no
    image of another run is left beside this one's; files emu did not write are kept."""
    try:
        earlier = json.loads((out / INDEX).read_text())
        names = [record["file_name"] for record in earlier["images"]]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no index, or not one of ours: nothing is known to be ours
    for name in [*names, "grid.png", INDEX]:
        path = out / Path(name).name  # a name only: never outside the folder
        path.unlink(missing_ok=True)
