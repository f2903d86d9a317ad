"""Drawing a backend's images for many prompts: in batches of a size a device holds, with
progress, each image still from its own prompt and seed (``Backend.sample``'s contract)."""

from __future__ import annotations

from typing import Any

from emu_cli.plugin.backend import Backend, Model

# Images drawn at once: small enough for a large model on one GPU, large enough to keep a CPU
# busy; a prompt set of 1,632 (PartiPrompts) is never one batch.
BATCH = 32


def sample_in_batches(
    backend: Backend,
    model: Model,
    prompts: list[str],
    *,
    steps: int,
    guidance: float,
    seeds: list[int],
    device: Any,
    description: str,
    batch_size: int = BATCH,
) -> list:
    """``backend.sample`` over ``prompts`` ``batch_size`` at a time, under a progress bar."""
    from tqdm.auto import tqdm

    images: list = []
    with tqdm(total=len(prompts), desc=description, unit="img", leave=False) as progress:
        for start in range(0, len(prompts), batch_size):
            chunk = slice(start, start + batch_size)
            images += backend.sample(
                model, prompts[chunk], steps=steps, guidance=guidance, seeds=seeds[chunk],
                device=device,
            )  # fmt: skip
            progress.update(len(prompts[chunk]))
    return images
