"""The judge a command line names: ``NAME``, ``NAME@SOURCE`` (its weights from a folder or Hub
repo), or a composition ``appeal=SPEC,faithfulness=SPEC``; and the judge a command uses when
none is named, which only a model trained on the built-in world has (``world``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from emu_cli.errors import EmuError
from emu_cli.plugin.judge import MEASURES, Judge

if TYPE_CHECKING:
    from emu_cli.checkpoint.provenance import Provenance

WORLD = "world"
WORLD_PROMPTS = "builtin:validation"


class ComposedJudge(Judge):
    """Appeal from one judge, faithfulness from another."""

    def __init__(self, parts: dict[str, Judge]) -> None:
        self.parts = parts
        self.measures = tuple(m for m in MEASURES if m in parts)
        self.name = ",".join(f"{m}={parts[m].spec}" for m in self.measures)
        self.description = "composed: " + self.name

    @property
    def spec(self) -> str:
        return self.name

    def score(self, images: list, prompts: list[str]) -> dict[str, np.ndarray]:
        scores: dict[str, np.ndarray] = {}
        by_judge: dict[int, dict[str, np.ndarray]] = {}
        for measure, judge in self.parts.items():  # a judge named twice scores once
            if id(judge) not in by_judge:
                by_judge[id(judge)] = judge.score(images, prompts)
            scored = by_judge[id(judge)]
            scores[measure] = scored[measure]
            if f"raw_{measure}" in scored:
                scores[f"raw_{measure}"] = scored[f"raw_{measure}"]
        return scores


def judge_from_spec(spec: str, judges: Mapping[str, Judge], *, complete: bool = True) -> Judge:
    """The judge ``spec`` names (see the module) among ``judges`` (by name; the registry's
    :func:`~emu_cli.plugin.registry.judge` passes those installed), refused with their names
    when it names none, or (``complete``) when it leaves appeal or faithfulness unmeasured."""
    spec = spec.strip()
    if "=" not in spec:
        judge = _one(spec, judges)
        missing = [m for m in MEASURES if m not in judge.measures]
        if missing and complete:
            raise EmuError(
                f"judge '{judge.name}' measures {' and '.join(judge.measures)} only: compose "
                f"it with one that measures {' and '.join(missing)}, e.g. --judge "
                f"appeal={spec},faithfulness=clipscore"
            )
        return judge
    parts: dict[str, Judge] = {}
    named: dict[str, Judge] = {}
    for item in spec.split(","):
        measure, _, name = (part.strip() for part in item.partition("="))
        if measure not in MEASURES or not name:
            raise EmuError(
                f"--judge '{spec}': each part is MEASURE=JUDGE with MEASURE one of "
                f"{', '.join(MEASURES)}, got '{item}'"
            )
        judge = named.setdefault(name, _one(name, judges))
        if measure not in judge.measures:
            raise EmuError(f"judge '{judge.name}' does not measure {measure}")
        parts[measure] = judge
    missing = [m for m in MEASURES if m not in parts]
    if missing and complete:
        raise EmuError(f"--judge '{spec}' names no judge for {' and '.join(missing)}")
    return ComposedJudge(parts)


def _one(spec: str, judges: Mapping[str, Judge]) -> Judge:
    name, _, source = spec.partition("@")
    if name not in judges:
        known = ", ".join(sorted(judges)) or "none"
        raise EmuError(f"unknown judge '{name}' (registered: {known}); see `emu backends`")
    judge = judges[name]
    return judge.from_source(source) if source else judge


def trained_on_world(provenance: Provenance) -> bool:
    """Whether a model learned from the built-in world's pool (``emu data synth``): pre-trained
    on it (quality-tuning data is curated from it, and not marked)."""
    record = provenance.pretraining_data or provenance.data
    return record is not None and record.world


def default_judge(spec: str | None, world: bool, command: str, installed: Iterable[str]) -> str:
    """``spec`` when given; ``world`` for a model (or models) trained on the world; otherwise
    refused, naming the judges installed: a judge of coloured shapes must not silently judge a
    real model."""
    if spec:
        return spec
    if world:
        return WORLD
    raise EmuError(
        f"{command} needs --judge for a model not trained on the built-in world (or judge: "
        f"in a config file). Installed judges: {', '.join(sorted(installed))}; compose them as "
        "appeal=JUDGE,faithfulness=JUDGE, give weights as JUDGE@FOLDER or JUDGE@OWNER/NAME; "
        "docs/judges.md says how to add one"
    )


def default_prompts(prompts: str | None, world: bool, command: str) -> str:
    """``prompts`` when given; the world's validation prompts for a world model; else refused."""
    if prompts:
        return prompts
    if world:
        return WORLD_PROMPTS
    raise EmuError(
        f"{command} needs --validation-prompts for a model not trained on the built-in world: "
        "a prompt file (.txt, or .jsonl with prompt and tags) or builtin:NAME"
    )
