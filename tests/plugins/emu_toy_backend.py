"""A throwaway third-party backend: it learns an image's mean color from its caption's words.

It uses only the public plugin contract, so it proves that contract end to end. Setting
EMU_TOY_NAN_AT=N makes its loss NaN from its N-th forward pass on, to test divergence handling.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_model, save_model
from torch import nn

from emu_cli import Backend, Model, Stage, hookimpl

BUCKETS = 1024


def word_ids(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids, offsets = [], []
    for caption in captions:
        offsets.append(len(ids))
        ids += [zlib.crc32(w.encode()) % BUCKETS for w in (caption.split() or ["<empty>"])]
    return torch.tensor(ids), torch.tensor(offsets)


class Colors(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.EmbeddingBag(BUCKETS, 3, mode="mean")

    def forward(self, ids, offsets):
        return torch.tanh(self.table(ids, offsets))


class ColorTraining(nn.Module):
    def __init__(self, colors: Colors):
        super().__init__()
        self.colors = colors
        self.calls = 0
        self.nan_at = int(os.environ.get("EMU_TOY_NAN_AT", "0"))

    def forward(self, batch):
        self.calls += 1
        predicted = self.colors(batch["ids"], batch["offsets"])
        noise = torch.randn(predicted.shape, generator=batch["generator"]) * 1e-3
        loss = nn.functional.mse_loss(predicted + noise, batch["targets"])
        if self.nan_at and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss}


class ToyBackend(Backend):
    name = "toy"
    description = "mean color from caption words (test plugin)"
    uses_noise_offset = False
    stages = (
        Stage(
            "colors",
            "word -> color table",
            {
                preset: {
                    "steps": 20,
                    "batch_size": 8,
                    "learning_rate": 0.2,
                    "resolution": 16,
                    "warmup_steps": 1,
                    "caption_dropout": 0.0,
                }
                for preset in ("tiny", "small", "base")
            },
        ),
    )

    def build(self, preset, options):
        torch.manual_seed(0)
        return Model(self.name, {"colors": Colors()}, {"preset": preset})

    def save(self, model, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        save_model(model["colors"], str(path / "colors.safetensors"))
        (path / "config.json").write_text(json.dumps({"buckets": BUCKETS}))

    def load(self, path: Path):
        if not (path / "colors.safetensors").is_file():
            raise ValueError(f"'{path}' has no colors.safetensors")
        colors = Colors()
        load_model(colors, str(path / "colors.safetensors"))
        return Model(self.name, {"colors": colors}, {})

    def encode(self, model, stage, images, captions):
        ids, offsets = word_ids(captions)
        return {"ids": ids, "offsets": offsets, "targets": images.mean(dim=(2, 3))}

    def training_module(self, model, stage, recipe):
        return ColorTraining(model["colors"])

    def sample(self, model, prompts, *, steps, guidance, seeds, device):
        with torch.no_grad():
            colors = model["colors"](*word_ids(prompts))
        images = []
        for color, seed in zip(colors, seeds, strict=True):
            jitter = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(seed)) * 0.1
            pixels = ((color.view(1, 1, 3) + jitter).clamp(-1, 1) + 1) * 127.5
            images.append(Image.fromarray(pixels.byte().numpy()))
        return images


@hookimpl
def register_backends(register):
    register(ToyBackend())


@hookimpl
def register_commands(cli):
    import click

    @cli.command(name="toy-palette")
    @click.argument("caption")
    def toy_palette(caption):
        """Print the word buckets of CAPTION (a plugin-provided command)."""
        click.echo(" ".join(str(i) for i in word_ids([caption])[0].tolist()))
