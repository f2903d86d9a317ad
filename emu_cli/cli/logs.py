"""The library's notes (logger ``emu``) on the terminal: one line each, on standard error,
as the commands' own messages are."""

from __future__ import annotations

import logging

import click


class _ClickHandler(logging.Handler):
    """Writes through click, so that a note reaches whatever stream click writes to now (a test
    runner's captured one included), not the stream there was when the handler was made."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def show_library_notes() -> None:
    logger = logging.getLogger("emu")
    if not any(isinstance(h, _ClickHandler) for h in logger.handlers):
        logger.addHandler(_ClickHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
