"""The core's own plugin: the built-in filters, registered like any third-party filter."""

from __future__ import annotations

from collections.abc import Callable

from emu_cli.curate.filters.aesthetic import AestheticFilter
from emu_cli.curate.filters.caption_words import CaptionWordsFilter
from emu_cli.curate.filters.clip_score import ClipScoreFilter
from emu_cli.curate.filters.concepts import ConceptBalanceFilter
from emu_cli.curate.filters.duplicates import DuplicateFilter
from emu_cli.curate.filters.judge import JudgeFilter
from emu_cli.curate.filters.ocr import OcrFilter
from emu_cli.curate.filters.size import SizeFilter
from emu_cli.plugin.hookspecs import hookimpl

# The order of a run when the config does not give one: cheap first, models last.
DEFAULT_ORDER = ("size", "duplicates", "ocr", "clip_score", "aesthetic", "concepts")


@hookimpl
def register_filters(register: Callable[[object], None]) -> None:
    for filter_class in (
        SizeFilter,
        CaptionWordsFilter,
        DuplicateFilter,
        OcrFilter,
        ClipScoreFilter,
        AestheticFilter,
        JudgeFilter,
        ConceptBalanceFilter,
    ):
        register(filter_class)
