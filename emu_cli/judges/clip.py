"""Judges on an open_clip model: ``clipscore`` (faithfulness: the image-text cosine, as
CLIPScore) and ``clip-aesthetic`` (appeal: a LAION-style aesthetic head on the image
embedding; faithfulness: the cosine).

``clip-aesthetic`` reads OpenAI's ViT-L/14 and LAION's improved aesthetic predictor by
default; ``clip-aesthetic@SOURCE`` reads a folder or Hub repo holding an open_clip model (as
``emu filter train-clip`` writes and ``emu push`` uploads it) and a head: emu's
(``aesthetic.safetensors`` and its record, from ``emu filter train-aesthetic``) or LAION's
(a ``.pth`` file); or the folder ``emu filter train-models`` writes (``clip/`` beside the head)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emu_cli.errors import EmuError
from emu_cli.judges.weights import hub_file, judge_folder, no_pickles_beside, state_dict
from emu_cli.kit.scoring import Scale, mapped
from emu_cli.plugin.judge import Judge

DEFAULT_CLIP = ("ViT-L-14", "openai")
# LAION's improved aesthetic predictor (MLP on ViT-L/14 embeddings, trained on SAC, LOGOS and
# AVA ratings); the original is on GitHub, this is a copy on the Hub.
LAION_HEAD = ("camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth")
EMU_HEAD = "aesthetic.safetensors"
CONFIG_FILE = "open_clip_config.json"
CLIP_FILES = ["open_clip_config.json", "open_clip_model.safetensors", EMU_HEAD, "*.json", "*.pth"]
# Raw-score scales (docs/judges.md): ratings on AVA's 1-10 scale, where a typical generated
# image sits near 5.5; CLIP cosines of a matching caption near 0.25 (CLIPScore's examples).
RATING = Scale(center=5.5, spread=0.75)
COSINE = Scale(center=0.25, spread=0.03)


class _OpenClip:
    """An open_clip model read once: by name and pretrained tag, or from a folder."""

    def __init__(self, name: str, pretrained: str | None) -> None:
        from emu_cli.curate.clip import ClipEncoder

        self.encoder = ClipEncoder.load(name, pretrained)

    def cosines(self, images: list, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(image embeddings, cosine of each image with its prompt)."""
        pictures = self.encoder.encode_images([image.convert("RGB") for image in images])
        texts = self.encoder.encode_texts(prompts)
        return pictures, (pictures * texts).sum(1)


class ClipScoreJudge(Judge):
    name = "clipscore"
    description = "faithfulness: CLIP image-text cosine (open_clip; default ViT-L-14/openai)"
    measures = ("faithfulness",)

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self._clip: _OpenClip | None = None

    def from_source(self, source: str) -> Judge:
        return type(self)(source)

    def _model(self) -> _OpenClip:
        if self._clip is None:
            if self.source is None:
                self._clip = _OpenClip(*DEFAULT_CLIP)
            else:
                folder = judge_folder(self.source, CLIP_FILES, self.name)
                # `emu filter train-models` writes OUT/clip/ beside OUT/aesthetic.safetensors
                inner = folder / "clip"
                self._clip = _OpenClip(
                    str(inner if (inner / CONFIG_FILE).is_file() else folder), None
                )
        return self._clip

    def score(self, images: list, prompts: list[str]) -> dict[str, np.ndarray]:
        _, cosines = self._model().cosines(images, prompts)
        return mapped({"faithfulness": cosines}, {"faithfulness": COSINE})


class ClipAestheticJudge(ClipScoreJudge):
    name = "clip-aesthetic"
    description = (
        "appeal: a LAION-style aesthetic head on CLIP image embeddings; faithfulness: CLIP "
        "cosine (default ViT-L-14/openai with LAION's improved aesthetic predictor)"
    )
    measures = ("appeal", "faithfulness")

    def __init__(self, source: str | None = None) -> None:
        super().__init__(source)
        self._head: Any = None

    def _aesthetic_head(self) -> Any:
        if self._head is None:
            if self.source is None:
                self._head = laion_head(hub_file(*LAION_HEAD, judge=self.name))
            else:
                folder = judge_folder(self.source, CLIP_FILES, self.name)
                self._head = head_in(folder, self._model())
        return self._head

    def score(self, images: list, prompts: list[str]) -> dict[str, np.ndarray]:
        import torch

        clip, head = self._model(), self._aesthetic_head()
        embeddings, cosines = clip.cosines(images, prompts)
        with torch.inference_mode():
            ratings = head(torch.from_numpy(np.ascontiguousarray(embeddings))).squeeze(1).numpy()
        scales = {"appeal": RATING, "faithfulness": COSINE}
        return mapped({"appeal": ratings, "faithfulness": cosines}, scales)


def head_in(folder: Path, clip: _OpenClip) -> Any:
    """The aesthetic head a folder holds: emu's (``aesthetic.safetensors`` with its record,
    refused when it was trained on another CLIP) or LAION's (one ``.pth`` file)."""
    from emu_cli.curate.aesthetic import AestheticHead

    laion = sorted(folder.glob("*.pth"))
    no_pickles_beside(folder, {p.name for p in laion[:1]})
    if (folder / EMU_HEAD).is_file():
        head = AestheticHead.load(folder / EMU_HEAD)
        head.check_reads(clip.encoder, folder / EMU_HEAD)
        return head.net
    if laion:
        return laion_head(laion[0])
    raise EmuError(
        f"'{folder}' holds no aesthetic head: {EMU_HEAD} (from `emu filter train-aesthetic`) "
        "or LAION's .pth file"
    )


def laion_head(path: Path) -> Any:
    """LAION's improved aesthetic predictor: an MLP from the embedding to a 1-10 rating,
    whose first layer's width is read from the file (768 for ViT-L/14)."""
    tensors = state_dict(path)
    try:
        width = tensors["layers.0.weight"].shape[1]
    except KeyError as error:
        raise EmuError(f"'{path}' is not a LAION aesthetic head (no layers.0.weight)") from error
    head = laion_mlp(width)
    try:
        head.load_state_dict(tensors)
    except RuntimeError as error:
        raise EmuError(f"'{path}' does not fit LAION's aesthetic head: {error}") from error
    return head.eval()


def laion_mlp(width: int) -> Any:
    """The MLP of LAION's improved aesthetic predictor (linear layers, no activations), whose
    parameter names are its file's keys; ImageReward's head is the same network."""
    import torch.nn as nn

    class AestheticMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
            )  # fmt: skip

        def forward(self, x: Any) -> Any:
            return self.layers(x)

    return AestheticMLP()
