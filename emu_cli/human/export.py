"""From decisions to a curated image folder that ``emu quality-tune`` reads."""

from __future__ import annotations

from pathlib import Path

from emu_cli.data import index_dataset
from emu_cli.human.server import store_path
from emu_cli.human.stages import export_kept
from emu_cli.human.store import AnnotationStore

# Generalists cut for recall: an image any of them kept goes on. Specialists cut for precision:
# it takes a majority of those who saw it.
POLICIES = {"generalist": "any", "specialist": "majority"}


def export_stage(data: Path, stage: str, out: Path) -> int:
    """The images ``stage`` kept (for ``caption``: what the specialists kept, or all), with the
    captions annotators wrote."""
    if stage == "compare":
        raise ValueError(
            "compare votes are read by `emu evaluate --annotators review` on the same folder"
        )
    store = AnnotationStore(store_path(data, stage))
    try:
        index = index_dataset(data)
        if stage == "caption":
            kept = store.kept("specialist", POLICIES["specialist"]) or {
                s.key for s in index.samples
            }
        else:
            kept = store.kept(stage, POLICIES[stage])
        return export_kept(index, kept, store, out)
    finally:
        store.close()
