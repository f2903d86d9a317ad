"""The plugin API of emu. Each hook's docstring is its documentation.

A plugin is a module (usually a package published with an entry point in group ``emu``)
that implements some of these hooks with ``@emu_cli.hookimpl``. The built-in backends, filters
and the built-in world are plugins of exactly this kind. ``docs/plugins.md`` is the guide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("emu")
hookimpl = pluggy.HookimplMarker("emu")


@hookspec
def register_backends(register: Callable[[object], None]) -> None:
    """Register model families.

    Call ``register(backend)`` with an instance of a :class:`emu_cli.Backend` subclass
    for each family the plugin provides. Its ``name`` is what users pass to ``--backend``.
    Keep this hook cheap: import torch and model code inside the backend's methods, so that
    ``emu --help`` and ``emu backends`` stay fast.
    """


@hookspec
def register_filters(register: Callable[[object], None]) -> None:
    """Register automatic curation filters used by ``emu filter``.

    Call ``register(FilterClass)`` once per filter, with a subclass of
    :class:`emu_cli.Filter`: a unique ``name``, ``score(batch, resources)``
    returning score columns for a batch of decoded samples (run in worker processes), and
    either a ``column`` that thresholds apply to or its own ``decide(table)``. ``emu filter``
    builds it with the options of the user's config. Keep module imports light.
    """


@hookspec
def register_judges(register: Callable[[object], None]) -> None:
    """Register automatic judges of generated images, used by ``emu quality-tune`` to stop
    early and by ``emu evaluate`` as proxies beside the human protocol.

    Call ``register(judge)`` with an object implementing :class:`emu_cli.Judge`: a
    unique ``name`` and ``score(images, prompts)`` returning per-image ``appeal`` and
    ``faithfulness`` in [0, 1]. Load models lazily, inside ``score``.
    """


@hookspec
def register_panels(register: Callable[[object], None]) -> None:
    """Register annotator panels, used by ``emu data simulate-review`` (filtering stages),
    ``emu evaluate`` (side-by-side votes) and ``emu data rate`` (1-10 ratings).

    Call ``register(panel)`` with an instance of a :class:`emu_cli.Panel` subclass: a unique
    ``name`` and ``filter``, ``vote`` and ``rate``, each writing to the annotation store.
    """


@hookspec
def register_captioners(register: Callable[[object], None]) -> None:
    """Register captioners, which ``emu data caption --captioner NAME`` uses to write a first
    caption for each image of a folder, for people to correct.

    Call ``register(captioner)`` with an :class:`emu_cli.Captioner`: a unique ``name`` and
    ``caption(images)`` returning one string per image. Load models lazily, inside it.
    """


@hookspec
def register_prompt_sets(register: Callable[[object], None]) -> None:
    """Register prompt sets that commands take as ``builtin:NAME`` (``--prompts``,
    ``--validation-prompts``).

    Call ``register(PromptSet(name, prompts))`` with an :class:`emu_cli.PromptSet`, whose
    ``prompts()`` returns :class:`emu_cli.Prompt` items; build them lazily inside it.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add extra commands or command groups to the ``emu`` CLI: ``cli`` is its ``click.Group``,
    so ``@cli.command()`` adds one. Import click inside the hook: the library does not."""
