"""The library's one error type: bad input, named, with what is wrong and the way out.

It is a ``ValueError``, so callers that catch those keep working; the CLI prints its message as
a one-line error and exits 1. Library code never prints or exits: notes go through ``logging``
(logger ``emu``), errors are raised as :class:`EmuError`.
"""

from __future__ import annotations


class EmuError(ValueError):
    """Something the user gave cannot be used; the message names it and says what to do."""
