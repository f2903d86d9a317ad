"""The paper's two human stages run by a registered panel (the built-in world's simulated
annotators by default): generalists cut for recall, specialists with the guideline checklist cut
for precision (200K -> 20K -> 2K).

Their decisions go to the same SQLite store the review app writes, and what they keep is
exported as an image folder, with the newest hand-written caption where one exists, ready for
the next stage or for ``emu quality-tune``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emu_cli.data.dataset import read_image
from emu_cli.data.export import refuse_to_replace, write_image_folder
from emu_cli.data.sources import SampleIndex, index_dataset
from emu_cli.human.store import AnnotationStore, Dataset
from emu_cli.plugin import registry


@dataclass
class ReviewResult:
    """What one human filtering stage did: images seen, kept, unreadable, and where the kept
    ones went."""

    seen: int
    kept: int
    unreadable: int
    out: Path


def export_kept(index: SampleIndex, kept: set[str], store: AnnotationStore, out: Path) -> int:
    """The kept samples of ``index`` as an image folder; captions written by annotators win."""
    captions = store.captions()
    entries = (
        (
            sample,
            f"images/{number:08d}",
            {"text": captions.get(sample.key, sample.caption), "source_key": sample.key},
        )
        for number, sample in enumerate(s for s in index.samples if s.key in kept)
    )
    return write_image_folder(out, entries, index.source)


def simulate_stage(
    data: Path,
    out: Path,
    *,
    stage: str,
    store_path: Path,
    keep_rate: float,
    annotators: int = 4,
    seed: int = 0,
    panel: str = "world",
) -> ReviewResult:
    annotating = registry.get_panel(panel)
    refuse_to_replace(Path(out), Path(data))  # before the annotators decide, not after
    index = index_dataset(data)
    images, unreadable = {}, 0
    for sample in index.samples:
        try:
            images[sample.key] = read_image(sample)
        except Exception:  # noqa: BLE001 - a broken file is not shown to annotators
            unreadable += 1
    store = AnnotationStore(store_path, Dataset.of(index))
    try:
        result = annotating.filter(
            store, stage, images, annotators=annotators, seed=seed, keep_rate=keep_rate
        )
        kept = export_kept(index, set(result.kept), store, out)
    finally:
        store.close()
    return ReviewResult(result.seen, kept, unreadable, Path(out))
