"""The provenance record, ``emu.json``: how a model was made, written and read here only.

Every checkpoint folder holds one beside the model: the backend and the options it was built
with, the stages completed, each stage's recipe and steps, the data (source and fingerprint),
the parent checkpoint and, after quality-tuning, the chosen step and its curve. Folders written
before the record had a format version (format 1) load the same; keys this version does not
know are kept, so a newer emu's record passes through an older one unharmed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu_cli.errors import EmuError

FORMAT_VERSION = 2  # 1: the untyped records before this module (no format_version key)
PROVENANCE = "emu.json"


class CheckpointError(EmuError):
    """A folder is not a usable emu checkpoint; the message names it and says why."""


@dataclass
class DataRecord:
    """The data a stage trained on: where it was read, and which samples (the fingerprint)."""

    source: str
    fingerprint: str
    samples: int
    rejected_while_indexing: int = 0
    upscaled: int | None = None  # quality-tuning: curated images smaller than its resolution
    world: bool = False  # the built-in world's pool (`emu data synth`): its judge is the default

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        if self.upscaled is None:  # pre-training counts none
            del record["upscaled"]
        if not self.world:
            del record["world"]
        return record


@dataclass
class QualityTuningRecord:
    """What quality-tuning did: the stage it tuned, how far, the step it kept and why."""

    stage: str
    steps_trained: int
    chosen_step: int
    stopped_early: str | None = None
    judge: str | None = None
    curve: dict[str, Any] | None = None
    encoder_calls_while_training: int = 0
    cached_rows: int = 0


@dataclass
class Provenance:
    backend: str
    preset: str = "small"
    options: dict[str, Any] = field(default_factory=dict)
    stages_completed: list[str] = field(default_factory=list)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    stage: str | None = None  # the stage the model was saved in
    step: int | None = None  # its step in that stage
    data: DataRecord | None = None
    pretraining_data: DataRecord | None = None
    parent: str | None = None  # the checkpoint it started from: a folder or OWNER/NAME@COMMIT
    parent_repo: str | None = None  # the Hub repo of that parent (a card's base_model)
    processes: int = 1
    holdout_metrics: dict[str, dict[str, float]] | None = None  # pre-training's, by stage
    quality_tuning: QualityTuningRecord | None = None
    adopted: str | None = None  # the pipeline class of a diffusers folder made elsewhere
    # recipe changes a resume made after a divergence (training.divergence.resumed_with_changes)
    resumed_with_changes: list[dict[str, Any]] | None = None
    files: list[str] = field(default_factory=list)  # the entries save_checkpoint wrote
    emu_version: str | None = None
    saved_at: str | None = None
    format_version: int = FORMAT_VERSION
    unknown: dict[str, Any] = field(default_factory=dict)  # keys from another version

    def with_changes(self, **changes: Any) -> Provenance:
        return dataclasses.replace(self, **changes)

    # -- one reader, one writer -------------------------------------------------------
    @classmethod
    def from_dict(cls, record: dict[str, Any], *, where: str = "the record") -> Provenance:
        if not isinstance(record, dict) or not isinstance(record.get("backend"), str):
            raise CheckpointError(f"{where} does not name a backend")
        names = {f.name for f in dataclasses.fields(cls)} - {"unknown"}
        known = {k: v for k, v in record.items() if k in names}
        known.setdefault("format_version", 1)
        try:
            for key in ("data", "pretraining_data"):
                if isinstance(known.get(key), dict):
                    known[key] = DataRecord(**known[key])
            if isinstance(known.get("quality_tuning"), dict):
                known["quality_tuning"] = QualityTuningRecord(**known["quality_tuning"])
            return cls(**known, unknown={k: v for k, v in record.items() if k not in names})
        except TypeError as error:  # a nested record with other fields
            raise CheckpointError(f"{where} is not a provenance record: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: fields left at None are left out, as the records before had them."""
        record = {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "unknown" and getattr(self, f.name) is not None
        }
        return {**self.unknown, **record}

    @classmethod
    def read(cls, folder: Path) -> Provenance:
        path = Path(folder) / PROVENANCE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"'{path}' is not valid JSON: {error}") from error
        return cls.from_dict(record, where=f"'{path}'")

    def write(self, folder: Path) -> None:
        text = json.dumps(self.to_dict(), indent=2, default=str)
        (Path(folder) / PROVENANCE).write_text(text, encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, DataRecord):
        return value.to_dict()
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
