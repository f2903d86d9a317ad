"""How a stage's recipe is worked out: one resolution, for pre-training and quality-tuning.

A recipe is built from layers, each later one winning over those before:

1. ``default``: the :class:`~emu_cli.training.recipe.Recipe` dataclass's defaults;
2. ``preset NAME``: the backend's defaults for the stage at that size preset (pre-training), or
   ``pre-trained model`` (quality-tuning: the resolution the model's pre-training ended at, and
   its seed);
3. ``quality-tuning recipe`` and ``quality-tuning preset NAME``: the paper's recipe, shared by
   every backend (quality-tuning only; the preset's learning rate times the backend's
   ``quality_tune_lr_scale``);
4. ``config file``: the ``--config`` file's keys;
5. ``command line``: the options given;
6. ``stages_recipe.STAGE``: the config file's values for one stage (pre-training only).

Two rules follow the layers: a backend that adds no Gaussian noise has no noise offset, and a
step count given without a ``resolution_schedule`` replaces the preset's phases. ``emu
pretrain --print-recipe`` and ``emu quality-tune --print-recipe`` show the result and, for each
field, the layer it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emu_cli.config import shown
from emu_cli.errors import EmuError
from emu_cli.plugin.backend import PRESETS, Backend
from emu_cli.training.recipe import Recipe

# A named layer of recipe values; a value of None is not given.
Layer = tuple[str, Mapping[str, Any]]

# The paper's quality-tuning recipe (stage 5), shared by every backend.
QT_RECIPE: dict[str, Any] = {
    "batch_size": 64,
    "noise_offset": 0.1,  # diffusion backends; a masked model has no Gaussian noise to offset
    "lr_schedule": "constant",
    "caption_dropout": 0.1,
    "preview_every": 0,  # the validation grids show what previews would
    "resolution_schedule": [],
}


@dataclass(frozen=True)
class QualityTuningPreset:
    """Quality-tuning's size, by the preset the model was pre-trained at: the recipe fields that
    scale with it, and the steps between validations."""

    recipe: Mapping[str, Any]
    validate_every: int


QT_PRESETS: dict[str, QualityTuningPreset] = {
    "tiny": QualityTuningPreset(
        {"steps": 12, "batch_size": 8, "learning_rate": 1e-4, "warmup_steps": 2,
         "ema_decay": 0.9, "checkpoint_every": 4},
        validate_every=4,
    ),
    "small": QualityTuningPreset(
        {"steps": 600, "learning_rate": 1e-4, "warmup_steps": 20, "ema_decay": 0.99,
         "checkpoint_every": 100},
        validate_every=50,
    ),
    "base": QualityTuningPreset(  # the paper's cap of 15K iterations
        {"steps": 15_000, "learning_rate": 1e-5, "warmup_steps": 500, "ema_decay": 0.999,
         "checkpoint_every": 1000},
        validate_every=500,
    ),
}  # fmt: skip
assert tuple(QT_PRESETS) == PRESETS, "a quality-tuning size for every preset"


@dataclass
class ResolvedRecipe:
    """A recipe and, for each of its fields, the layer its value came from."""

    recipe: Recipe
    sources: dict[str, str]

    def setting(self, field: str, value: Any, source: str) -> None:
        self.recipe = self.recipe.updated(**{field: value})
        self.sources[field] = source

    def table(self) -> str:
        """One line per field: its value and where it came from (``--print-recipe``)."""
        values = {k: shown(v) for k, v in self.recipe.to_dict().items()}
        width = max(map(len, values))
        return "\n".join(
            f"{name:<{width}}  {values[name]:<12}  {self.sources[name]}" for name in values
        )


def resolve(layers: Sequence[Layer]) -> ResolvedRecipe:
    """The recipe of ``layers`` applied in order over the defaults (not yet validated)."""
    recipe = Recipe()
    sources = dict.fromkeys(Recipe.field_names(), "default")
    for source, values in layers:
        given = _given([(source, values)])
        recipe = recipe.updated(**given)
        sources.update(dict.fromkeys(given, source))
    return ResolvedRecipe(recipe, sources)


def _given(layers: Sequence[Layer]) -> dict[str, Any]:
    """The values ``layers`` give, later ones over earlier ones (None is not given)."""
    merged: dict[str, Any] = {}
    for _, values in layers:
        merged.update({key: value for key, value in values.items() if value is not None})
    return merged


def _honour_noise_offset(backend: Backend, resolved: ResolvedRecipe, asked: dict) -> None:
    """A backend that adds no Gaussian noise has no noise offset: asking for one is an error,
    and its recipe records none, so that emu.json says what training did."""
    if backend.uses_noise_offset:
        return
    if asked.get("noise_offset"):
        raise EmuError(
            f"backend '{backend.name}' adds no Gaussian noise, so it has no noise offset "
            f"(got noise_offset={asked['noise_offset']}); leave it out"
        )
    resolved.setting("noise_offset", 0.0, f"backend '{backend.name}' adds no noise")


def stage_recipe(
    backend: Backend,
    stage: str,
    preset: str,
    overrides: Sequence[Layer],
    per_stage: Mapping[str, Mapping[str, Any]],
) -> ResolvedRecipe:
    """A pre-training stage's recipe: preset, then ``overrides`` (config file, command line),
    then the config file's ``stages_recipe`` for this stage."""
    specific = per_stage.get(stage, {}) or {}
    unknown = set(specific) - Recipe.field_names()
    if unknown:
        raise EmuError(
            f"stages_recipe.{stage} has unknown recipe keys: {', '.join(sorted(unknown))}"
        )
    layers = [
        (f"preset {preset}", backend.stage(stage).defaults.get(preset, {})),
        *overrides,
        (f"stages_recipe.{stage}", specific),
    ]
    resolved = resolve(layers)
    asked = _given([*overrides, ("", specific)])
    _honour_noise_offset(backend, resolved, asked)
    # a new step count replaces the preset's phases
    replaced = "steps" in asked and "resolution_schedule" not in asked
    if replaced and resolved.recipe.resolution_schedule:
        resolved.setting("resolution_schedule", [], "steps given: the preset's phases left")
    resolved.recipe.validate()
    return resolved


def quality_tuning_recipe(
    backend: Backend,
    preset: str,
    pretrained: Mapping[str, Any],
    overrides: Sequence[Layer],
) -> ResolvedRecipe:
    """Quality-tuning's recipe for a model pre-trained at ``preset`` with the generator stage's
    recipe ``pretrained``: it tunes at the resolution pre-training ended at, with the paper's
    recipe at the preset's size, then ``overrides`` (config file, command line)."""
    if preset not in QT_PRESETS:
        raise EmuError(f"preset must be one of {', '.join(QT_PRESETS)}, got '{preset}'")
    known = {k: v for k, v in pretrained.items() if k in Recipe.field_names()}
    ended = Recipe().updated(**known)
    sized = dict(QT_PRESETS[preset].recipe)
    sized["learning_rate"] *= backend.quality_tune_lr_scale
    resolved = resolve(
        [
            ("pre-trained model", {"resolution": ended.phases()[-1][0], "seed": ended.seed}),
            ("quality-tuning recipe", QT_RECIPE),
            (f"quality-tuning preset {preset}", sized),
            *overrides,
        ]
    )
    resolved.recipe.validate()
    _honour_noise_offset(backend, resolved, _given(overrides))
    return resolved
