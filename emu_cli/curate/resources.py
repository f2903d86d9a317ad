"""Models that several filters share inside one worker process, loaded once and on demand."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Resources:
    """What every filter in a worker can use. Picklable: models are built after the fork.

    ``clip_model`` is an open_clip name (``ViT-L-14`` with ``clip_pretrained="openai"``), an
    ``hf-hub:``/``local-dir:`` identifier, or the folder written by ``emu filter train-clip``.
    ``device`` is ``--device``: ``auto`` is the CPU here, since every worker process would
    load its own CLIP onto one GPU. ``judges`` gives the installed judges by name (the
    command passes the registry's ``get_judges``), for the filters that score with one.
    """

    clip_model: str | None = None
    clip_pretrained: str | None = None
    device: str = "cpu"
    judges: Callable[[], Mapping[str, Any]] | None = None
    _clip: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.device == "auto":
            self.device = "cpu"

    def clip(self):
        """The shared :class:`emu_cli.curate.clip.ClipEncoder`."""
        if self._clip is None:
            if not self.clip_model:
                raise ValueError(
                    "this filter needs a CLIP model: pass --clip-model (an open_clip name with "
                    "--clip-pretrained, or a folder from `emu filter train-clip`)"
                )
            from emu_cli.curate.clip import ClipEncoder

            self._clip = ClipEncoder.load(self.clip_model, self.clip_pretrained, self.device)
        return self._clip

    def judge(self, spec: str) -> Any:
        """The judge a ``--judge`` spec names, its model loaded in this process on first use."""
        from emu_cli.judges.spec import judge_from_spec

        if self.judges is None:
            raise ValueError("this run was given no judges (Resources.judges)")
        return judge_from_spec(spec, self.judges(), complete=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_clip": None}
