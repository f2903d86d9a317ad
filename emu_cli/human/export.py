"""From decisions to a curated image folder that ``emu quality-tune`` reads."""

from __future__ import annotations

import logging
from pathlib import Path

from emu_cli.data import index_dataset
from emu_cli.errors import EmuError
from emu_cli.human.server import POLICIES, store_path
from emu_cli.human.stages import export_kept
from emu_cli.human.store import AnnotationStore, Dataset

log = logging.getLogger("emu")


def export_stage(data: Path, stage: str, out: Path, database: Path | None = None) -> int:
    """The images ``stage`` kept (for ``caption``: what the specialists kept, or all), with the
    captions annotators wrote; ``database``: the store (default beside ``data``). Says how
    many items no annotator decided on: they are left out."""
    if stage == "compare":
        raise EmuError(
            "compare votes are read by `emu evaluate --annotators review` on the same folder"
        )
    index = index_dataset(data, captions_for=None)
    store = AnnotationStore(database or store_path(data, stage), Dataset.of(index))
    try:
        if stage == "caption":
            kept = store.kept("specialist", POLICIES["specialist"]) or {
                s.key for s in index.samples
            }
        else:
            kept = store.kept(stage, POLICIES[stage])
            shown = (
                store.kept("generalist", POLICIES["generalist"]) if stage == "specialist" else {}
            )
            candidates = shown or {s.key for s in index.samples}
            undecided = len(candidates - set(store.decided(stage)))
            if undecided:
                log.warning(
                    f"{undecided} of {len(candidates)} items have no {stage} decision in "
                    f"{store.path}; they are left out of {out}"
                )
        return export_kept(index, kept, store, out)
    finally:
        store.close()
