"""The contract between the core and a model family ("backend").

The core owns data, training, checkpoints, evaluation and publishing; a backend answers only
the model-specific questions below. One shared trainer runs every stage of every backend, so
the quality-tuning recipe lives in one place.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from emu_cli.errors import EmuError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from emu_cli.data.framing import Framing
    from emu_cli.training.recipe import Recipe

PRESETS = ("tiny", "small", "base")


@dataclass
class Stage:
    """One thing pre-training trains, e.g. the autoencoder then the denoiser."""

    name: str
    description: str
    # How the stage's default run is sized, per preset: resolution of the images fed to it,
    # steps, batch size and learning rate. A user's config overrides any of them.
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    # False for a stage that learns images alone (an autoencoder, a tokenizer): it trains on
    # a folder of images with no captions.
    reads_captions: bool = True


def stage_defaults(
    steps: int, batch: int, lr: float, resolution: int, warmup: int, ema: float
) -> dict[str, Any]:
    """One preset's defaults for a :class:`Stage`, as recipe fields (a plugin's shorthand)."""
    return {
        "steps": steps,
        "batch_size": batch,
        "learning_rate": lr,
        "resolution": resolution,
        "warmup_steps": warmup,
        "ema_decay": ema,
    }


def checked_options(
    backend: str, given: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    """A backend's options (``--option KEY=VALUE``, ``model_options:``): ``defaults`` with
    ``given`` over them (None keeps the default). An option the backend does not have, or a
    value of another kind than its default's (a number, text, true or false, a mapping), is
    refused, naming it. Resolve defaults that depend on the preset before calling, so that
    they are checked too; a default of None takes anything."""
    from emu_cli.config import value_kind

    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise EmuError(
            f"backend '{backend}' has no option {', '.join(unknown)} "
            f"(options: {', '.join(defaults)})"
        )
    chosen = dict(defaults)
    for key, value in given.items():
        if value is None:
            continue
        expected = value_kind(defaults[key])
        if expected and value_kind(value) != expected:
            raise EmuError(f"backend '{backend}': option {key} must be {expected}, not {value!r}")
        chosen[key] = value
    return chosen


def component_config(folder: Path, component: str, name: str = "config.json") -> dict[str, Any]:
    """A component's config in a diffusers folder (what :meth:`Backend.adopt` reads)."""
    import json

    try:
        return json.loads((Path(folder) / component / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EmuError(f"'{folder}': cannot read {component}/{name}: {error}") from error


def adopted_provenance(
    backend: Backend,
    presets: dict[str, dict[str, Any]],
    grid: int,
    autoencoder: dict[str, Any] | None,
    options: dict[str, Any],
    stages: list[str] | None = None,
) -> dict[str, Any]:
    """What :meth:`Backend.adopt` returns for a complete model whose generator works on a
    ``grid`` x ``grid`` latent or token map that ``autoencoder`` (its config) decodes, or on
    pixels (``autoencoder`` None): ``stages`` done (default: every stage), the size it draws at
    (the grid, doubled by each autoencoder block after the first, as diffusers' AutoencoderKL
    and VQModel do), and the preset (which sizes the quality-tuning recipe) the largest whose
    resolution that reaches."""
    blocks = len(autoencoder["block_out_channels"]) if autoencoder is not None else 1
    resolution = int(grid) * 2 ** (blocks - 1)

    def size(name: str) -> int:
        return presets[name]["resolution"]

    fitting = [name for name in presets if size(name) <= resolution]
    preset = max(fitting, key=size) if fitting else min(presets, key=size)
    return {
        "preset": preset,
        "options": options,
        "stages_completed": stages or [stage.name for stage in backend.stages],
        "recipes": {backend.generator_stage(): {"resolution": resolution}},
    }


@runtime_checkable
class ScaledLearningRates(Protocol):
    """What a training module (:meth:`Backend.training_module`) may also have: submodules that
    learn at a fraction of the stage's rate, by the submodule's attribute name (e.g.
    ``{"text_encoder": 0.1}``). The trainer gives each its own optimizer group; the rest learn
    at the recipe's rate."""

    learning_rate_scales: dict[str, float]


@dataclass
class Model:
    """A built or loaded model: named components (torch modules, tokenizer, scheduler) and
    the options the backend needs to use them (e.g. the autoencoder's Fourier lift)."""

    backend: str
    components: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.components[name]

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (the first parameter of its first torch module that
        holds data: not one set aside on the meta device during training)."""
        import torch

        for component in self.components.values():
            if isinstance(component, torch.nn.Module):
                for parameter in component.parameters():
                    if parameter.device.type != "meta":
                        return parameter.device
                    break
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> Model:
        for component in self.components.values():
            if hasattr(component, "to") and hasattr(component, "parameters"):
                component.to(device)
        return self


class Backend(ABC):
    """A model family. Subclass it, then register an instance from ``register_backends``.

    Methods receive a :class:`Model` and plain tensors; none may read global state, so that
    the trainer can run them in several processes and resume them exactly.
    """

    name: str
    description: str = ""
    stages: tuple[Stage, ...]
    # Diffusion backends honour the recipe's noise offset. Others set this False: their recipes
    # record none and asking for one is an error.
    uses_noise_offset: bool = True
    # The stage ``emu quality-tune`` fine-tunes: the one that turns text into images. None means
    # the last stage; a backend whose last stage only upscales names its generator instead.
    quality_tune_stage: str | None = None
    # Multiplies the shared quality-tuning learning rate. A family whose pre-trained model
    # moves too little at the recipe's rate says so here, with the measurement behind it,
    # instead of keeping a recipe of its own.
    quality_tune_lr_scale: float = 1.0
    # The classifier-free guidance scale used wherever a command is not given one (generation,
    # validation during training, evaluation), as each diffusers pipeline has its own default.
    default_guidance: float = 5.0
    # The outputs of ``encode`` that depend on the captions alone (token ids), when every other
    # output depends on the images alone: quality-tuning's cache then encodes an image once
    # whatever captions it trains with (half the autoencoder passes with caption dropout).
    caption_encodings: tuple[str, ...] = ()
    # True for a backend whose ``encode`` also takes ``framings=``: one
    # :class:`~emu_cli.data.framing.Framing` per image, how it was cut from its file (SDXL's
    # size and crop micro-conditioning). Its outputs may then depend on the framing too.
    reads_framing: bool = False

    def guidance(self, requested: float | None) -> float:
        """The guidance scale to sample with: ``requested``, or the family's default."""
        if requested is None:
            return self.default_guidance
        if not math.isfinite(requested) or requested < 0:
            raise EmuError(f"guidance scale must be a finite number >= 0, got {requested}")
        return requested

    def default_stages(self, preset: str, options: dict[str, Any]) -> list[str]:
        """The stages ``emu pretrain`` trains when the user names none: by default all of them.
        A backend whose model has optional parts (a super-resolution stage a preset leaves
        off) returns fewer."""
        return [stage.name for stage in self.stages]

    def generator_stage(self) -> str:
        """The stage quality-tuning trains (see ``quality_tune_stage``)."""
        return self.stage(self.quality_tune_stage or self.stages[-1].name).name

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        known = ", ".join(s.name for s in self.stages)
        raise EmuError(f"backend '{self.name}' has no stage '{name}' (stages: {known})")

    @abstractmethod
    def build(self, preset: str, options: dict[str, Any]) -> Model:
        """A freshly initialised model from a size preset (``tiny``, ``small`` or ``base``)."""

    @abstractmethod
    def save(self, model: Model, path: Path) -> None:
        """Write ``model`` as a diffusers-style folder (model_index.json, components with
        config.json and safetensors). The core adds ``emu.json`` beside it."""

    @abstractmethod
    def load(self, path: Path) -> Model:
        """Read a folder written by :meth:`save`. Raise :class:`EmuError` naming the path and
        what is wrong when the folder is not a checkpoint of this backend."""

    def adopt(self, path: Path, pipeline_class: str) -> dict[str, Any] | None:
        """For a diffusers folder emu did not write (no ``emu.json``), e.g. a model trained
        elsewhere and taken from the Hub: the provenance this backend would have recorded for it
        (``preset``, ``options``, ``stages_completed`` and ``recipes`` with the generator stage's
        ``resolution``), read from the folder's configs; None when this backend does not load
        ``pipeline_class``. With it, such a model is generated from, quality-tuned and evaluated
        like one pre-trained here."""
        return None

    @abstractmethod
    def training_module(self, model: Model, stage: str, recipe: Recipe) -> torch.nn.Module:
        """A module whose ``forward(batch)`` returns a dict with a scalar ``"loss"`` (and any
        other scalars to log). Its parameters with ``requires_grad`` are what the stage
        trains; it holds references to ``model``'s components, so training updates them. It
        may also be :class:`ScaledLearningRates`: some submodules learn at their own rate.

        ``batch`` is the output of :meth:`encode` plus ``"generator"``: a ``torch.Generator``
        seeded by the trainer for this step and process, to be used for every random draw
        (noise, timesteps, masks) so that runs resume and parallelise exactly.
        """

    @abstractmethod
    def encode(self, model: Model, stage: str, images: torch.Tensor, captions: list[str]) -> dict:
        """Turn a batch of images in [-1, 1] (N, 3, H, W) and captions into training inputs
        (latents, pixels or tokens; token ids). Pure and deterministic, so it can be cached.
        A backend that sets ``reads_framing`` takes ``framings`` as a keyword too."""

    @abstractmethod
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
        """One image per prompt; image ``i`` depends only on ``prompts[i]`` and ``seeds[i]``."""

    def reconstruct(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        """``images`` in [-1, 1] as the stages below the generator give them back (an
        autoencoder's or a tokenizer's round trip): the best the generator can draw, and so
        the most that quality-tuning it can reach. The default, for a generator of pixels,
        gives them back unchanged."""
        return images

    def preview(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str], seed: int
    ) -> tuple[list[Image.Image], dict[str, float]]:
        """Images and metrics a person looks at during training of ``stage``, computed on
        held-out samples: reconstructions and PSNR for an autoencoder, generations for the
        captions for a generator. The default samples the captions."""
        seeds = [seed + i for i in range(len(captions))]
        pictures = self.sample(
            model,
            captions,
            steps=20,
            guidance=self.default_guidance,
            seeds=seeds,
            device=model.device,
        )
        return pictures, {}

    def encoding_components(self, model: Model, stage: str) -> tuple[str, ...]:
        """Components only :meth:`encode` runs in ``stage`` (frozen text encoders, whose
        outputs ``encode`` returns): while quality-tuning serves ``encode`` from its cache, the
        core takes them out of memory during the steps and reads them again from the model's
        folder (``type(component).from_pretrained(folder / name)``) to sample and save. The
        default: none."""
        return ()

    def size_multiple(self, model: Model, stage: str) -> int | None:
        """What the width and height of ``stage``'s training images must be multiples of, for
        aspect-ratio buckets (non-square batches); None, the default, for a stage that takes
        square images only, whose images are centre-cropped (and the run's plan says so)."""
        return None

    def prepare_stage(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str]
    ) -> None:
        """Data-dependent set-up before ``stage`` starts from scratch (never on resume), given
        the same batch of training images in every process, at the resolution the stage ends
        at: e.g. scaling latents to unit variance, or recording that resolution as the one the
        model generates at. The default does nothing."""
        return None  # noqa: B027 - an optional hook, not an abstract one


def encode_batch(
    backend: Backend,
    model: Model,
    stage: str,
    images: torch.Tensor,
    captions: list[str],
    framings: list[Framing],
) -> dict:
    """``backend.encode``, given the images' framings where the backend reads them: how the
    core calls it."""
    if backend.reads_framing:
        return backend.encode(model, stage, images, captions, framings=framings)  # type: ignore[call-arg]
    return backend.encode(model, stage, images, captions)
