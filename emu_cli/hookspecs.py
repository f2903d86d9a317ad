"""The plugin API of emu. Each hook's docstring is its documentation.

A plugin is a module (usually a package published with an entry point in group ``emu``)
that implements some of these hooks with ``@emu_cli.hookimpl``. The built-in backends are
plugins of exactly this kind.
"""

from __future__ import annotations

from collections.abc import Callable

import click
import pluggy

hookspec = pluggy.HookspecMarker("emu")
hookimpl = pluggy.HookimplMarker("emu")


@hookspec
def register_backends(register: Callable[[object], None]) -> None:
    """Register model families.

    Call ``register(backend)`` with an object implementing :class:`emu_cli.backend.Backend`
    for each family the plugin provides. Its ``name`` is what users pass to ``--backend``.
    Keep this hook cheap: import torch and model code inside the backend's methods, so that
    ``emu --help`` and ``emu backends`` stay fast.
    """


@hookspec
def register_filters(register: Callable[[object], None]) -> None:
    """Register automatic curation filters used by ``emu filter``.

    Call ``register(FilterClass)`` once per filter, with a subclass of
    :class:`emu_cli.curate.filter.Filter`: a unique ``name``, ``score(batch, resources)``
    returning score columns for a batch of decoded samples (run in worker processes), and
    either a ``column`` that thresholds apply to or its own ``decide(table)``. ``emu filter``
    builds it with the options of the user's config. Keep module imports light.
    """


@hookspec
def register_judges(register: Callable[[object], None]) -> None:
    """Register automatic judges of generated images, used by ``emu quality-tune`` to stop
    early and by ``emu evaluate`` as proxies beside the human protocol.

    Call ``register(judge)`` with an object implementing :class:`emu_cli.judging.Judge`: a
    unique ``name`` and ``score(images, prompts)`` returning per-image ``appeal`` and
    ``faithfulness`` in [0, 1]. Load models lazily, inside ``score``.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add extra commands or command groups to the ``emu`` CLI with ``cli.command()``."""
