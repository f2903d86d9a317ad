"""emu's example backend (docs/plugins.md): it learns an image's mean color from its caption.

It is small enough to read in one sitting and uses only emu's public API (``import emu_cli``),
yet it goes through every command a backend meets: ``emu pretrain``, ``generate``,
``quality-tune`` and ``evaluate``. A real backend answers the same questions with a diffusion
model or a transformer (the built-in ones are in emu's ``plugins/`` folder).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_model, save_model
from torch import nn

import emu_cli
from emu_cli import Backend, Model, Recipe, Stage, hookimpl

BUCKETS = 1024  # caption words are hashed into this many rows of the color table
WORDS = 16  # a caption's first words that count; shorter ones are padded
SIZE = 16  # the side of the images it draws


def word_ids(captions: list[str]) -> torch.Tensor:
    """The captions' words as hashed ids, one padded row per caption: encodings have one row
    per image, so that quality-tuning can cache them (see ``Backend.encode``)."""
    rows = []
    for caption in captions:
        ids = [zlib.crc32(w.encode()) % BUCKETS for w in (caption.split() or ["<empty>"])]
        rows.append((ids + [BUCKETS] * WORDS)[:WORDS])
    return torch.tensor(rows)


class Colors(nn.Module):
    """The whole model: a color per word, averaged over a caption's words."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.EmbeddingBag(BUCKETS + 1, 3, mode="mean", padding_idx=BUCKETS)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.table(ids))


class ColorTraining(nn.Module):
    """What the shared trainer steps: ``forward(batch)`` returns the loss. Every random draw
    uses ``batch["generator"]``, so a run resumes and runs in parallel exactly."""

    def __init__(self, colors: Colors) -> None:
        super().__init__()
        self.colors = colors

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        predicted = self.colors(batch["ids"])
        noise = torch.randn(predicted.shape, generator=batch["generator"]) * 1e-3
        return {"loss": nn.functional.mse_loss(predicted + noise, batch["targets"])}


class ColorBackend(Backend):
    name = "example"
    description = "mean color from caption words (the plugin guide's example)"
    uses_noise_offset = False  # it adds no Gaussian noise, so a noise offset is refused
    default_guidance = 0.0  # it has no guidance to give
    stages = (
        Stage(
            "colors",
            "caption words -> mean color",
            {
                preset: emu_cli.stage_defaults(
                    steps=steps, batch=8, lr=0.2, resolution=SIZE, warmup=1, ema=0.0
                )
                for preset, steps in (("tiny", 20), ("small", 200), ("base", 2000))
            },
        ),
    )

    def build(self, preset: str, options: dict[str, Any]) -> Model:
        emu_cli.checked_options(self.name, options, {})  # it has no options: refuse any
        return Model(self.name, {"colors": Colors()}, {"preset": preset})

    def save(self, model: Model, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        save_model(model["colors"], str(path / "colors.safetensors"))
        (path / "config.json").write_text(json.dumps({"buckets": BUCKETS}))

    def load(self, path: Path) -> Model:
        if not (path / "colors.safetensors").is_file():
            raise emu_cli.EmuError(f"'{path}' has no colors.safetensors: not an example model")
        colors = Colors()
        load_model(colors, str(path / "colors.safetensors"))
        return Model(self.name, {"colors": colors}, {})

    def encode(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str]
    ) -> dict[str, Any]:
        return {"ids": word_ids(captions), "targets": images.mean(dim=(2, 3))}

    def training_module(self, model: Model, stage: str, recipe: Recipe) -> nn.Module:
        return ColorTraining(model["colors"])

    def sample(
        self,
        model: Model,
        prompts: list[str],
        *,
        steps: int,
        guidance: float,
        seeds: list[int],
        device: torch.device,
    ) -> list[Image.Image]:
        with torch.no_grad():
            colors = model["colors"](word_ids(prompts))
        images = []
        for color, seed in zip(colors, seeds, strict=True):
            noise = torch.Generator().manual_seed(seed)
            jitter = torch.rand(SIZE, SIZE, 3, generator=noise) * 0.1
            pixels = ((color.view(1, 1, 3) + jitter).clamp(-1, 1) + 1) * 127.5
            images.append(Image.fromarray(pixels.byte().numpy()))
        return images


@hookimpl
def register_backends(register: Any) -> None:
    register(ColorBackend())


@hookimpl
def register_commands(cli: Any) -> None:
    import click  # the CLI's library, imported only where a command is added

    @cli.command(name="example-palette")
    @click.argument("caption")
    def example_palette(caption: str) -> None:
        """Print the word buckets of CAPTION (a command added by a plugin)."""
        click.echo(" ".join(str(i) for i in word_ids([caption])[0].tolist() if i < BUCKETS))
