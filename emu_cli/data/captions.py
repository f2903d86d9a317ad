"""Captions written by a model for a folder of images, as ``NAME.txt`` beside each (kohya's
layout, which every command reads), for people to correct in the review app's caption stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emu_cli.data.sources import DatasetError, caption_files, image_files
from emu_cli.files import write_atomic
from emu_cli.plugin.captioner import Captioner


@dataclass
class Captioned:
    written: int = 0
    kept: int = 0  # images that had a caption file already
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image, why)


def caption_folder(
    root: Path, captioner: Captioner, *, overwrite: bool = False, batch_size: int = 8
) -> Captioned:
    """Write ``NAME.txt`` beside every image under ``root`` that has none (every image, with
    ``overwrite``). An image that cannot be read, or gets an empty caption, is named in
    ``failed`` and left without one."""
    from tqdm.auto import tqdm

    from emu_cli.data.dataset import decode, to_rgb

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"'{root}' is not a folder of images")
    if listed := [p for files in caption_files(root).values() for p in files]:
        raise DatasetError(
            f"'{root}' keeps its captions in {listed[0].name}; `emu data caption` writes a "
            "NAME.txt beside each image of a folder of images (with or without captions)"
        )
    images = image_files(root)
    if not images:
        raise DatasetError(f"'{root}' holds no images")
    result = Captioned()
    todo = [p for p in images if overwrite or not p.with_suffix(".txt").is_file()]
    result.kept = len(images) - len(todo)
    progress = tqdm(total=len(todo), desc=f"captioning with {captioner.spec}", unit="img")
    for start in range(0, len(todo), batch_size):
        batch, pictures = [], []
        for path in todo[start : start + batch_size]:
            try:  # decoded as training decodes (decompression bombs refused)
                pictures.append(to_rgb(decode(path.read_bytes())))
                batch.append(path)
            except Exception as error:  # noqa: BLE001 - one bad file is named, not fatal
                result.failed.append((str(path.relative_to(root)), type(error).__name__))
        for path, text in zip(batch, captioner.caption(pictures) if pictures else [],
                              strict=True):  # fmt: skip
            if text.strip():
                write_atomic(path.with_suffix(".txt"), text.strip() + "\n")
                result.written += 1
            else:
                result.failed.append((str(path.relative_to(root)), "empty caption"))
        progress.update(len(todo[start : start + batch_size]))
    progress.close()
    return result
