"""How a training view was cut from its image: the image's size as decoded and where the view
lies in it. Stable Diffusion XL conditions on both (its size and crop micro-conditioning), so
a model trained on crops of large photos learns not to draw cut-off subjects; a backend reads
them by setting :attr:`~emu_cli.plugin.backend.Backend.reads_framing`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Framing:
    """``original``: the image's (width, height), EXIF rotation applied; ``crop``: the (left,
    top) of the view, in pixels of the image scaled to cover the view (what SDXL's
    ``crops_coords_top_left`` counts, in the other order); ``size``: the view's (width,
    height)."""

    original: tuple[int, int]
    crop: tuple[int, int]
    size: tuple[int, int]

    @classmethod
    def centred(cls, original: tuple[int, int], size: tuple[int, int]) -> Framing:
        """The framing of the centre of ``original`` scaled to cover ``size``, as
        :func:`~emu_cli.data.dataset.resize_and_crop` cuts it. A mirrored view keeps it: a
        centred crop is its own mirror image."""
        (width, height), (view_width, view_height) = original, size
        scale = max(view_width / width, view_height / height)
        left = round((width * scale - view_width) / 2)
        top = round((height * scale - view_height) / 2)
        return cls(original, (left, top), size)
