"""Plugin discovery: entry points in group ``emu``, an allow-list, and a report of what loaded.

Nothing here imports torch. A plugin that fails to import or to register is reported with a
warning naming it and skipped, so the rest of the toolkit keeps working.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from emu_cli.errors import EmuError
from emu_cli.plugin import hookspecs

ENTRY_POINT_GROUP = "emu"
ALLOW_LIST_VARIABLE = "EMU_LOAD_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or could not register what it provides."""


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    backends: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)
    panels: list[str] = field(default_factory=list)
    prompt_sets: list[str] = field(default_factory=list)
    captioners: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadFailure:
    name: str
    distribution: str | None
    error: str


pm = pluggy.PluginManager("emu")
pm.add_hookspecs(hookspecs)
_loaded = False
_failures: list[LoadFailure] = []
_distributions: dict[str, str] = {}


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_VARIABLE)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _record_failure(name: str, error: BaseException) -> None:
    failure = LoadFailure(name, _distributions.get(name), f"{type(error).__name__}: {error}")
    if failure in _failures:
        return
    _failures.append(failure)
    where = f" (distribution {failure.distribution})" if failure.distribution else ""
    warnings.warn(
        f"emu: plugin '{name}'{where} failed: {failure.error}", PluginWarning, stacklevel=3
    )


def load_plugins() -> pluggy.PluginManager:
    """Register every entry point of group ``emu`` once, filtered by ``EMU_LOAD_PLUGINS``.

    ``EMU_LOAD_PLUGINS`` is a comma-separated list of entry-point or distribution names;
    the empty string loads no plugin at all.
    """
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    from emu_cli.captioners import plugin as captioners
    from emu_cli.curate import builtin
    from emu_cli.evaluate import benchmarks
    from emu_cli.judges import plugin as judges
    from emu_cli.world import plugin as world

    # The core's own filters and judges, and the built-in world (its judge, panel and prompt
    # sets), are plugins too (as pytest's features are), always loaded.
    pm.register(builtin, name="emu")
    pm.register(judges, name="judges")
    pm.register(benchmarks, name="benchmarks")
    pm.register(captioners, name="captioners")
    pm.register(world, name="world")
    for name in ("emu", "judges", "benchmarks", "captioners", "world"):
        _distributions[name] = "emu-cli"
    allowed = _allow_list()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist.name if entry_point.dist else None
        if allowed is not None and not {entry_point.name, distribution} & allowed:
            continue
        if pm.get_plugin(entry_point.name) is not None:
            continue
        if distribution:
            _distributions[entry_point.name] = distribution
        try:
            pm.register(entry_point.load(), name=entry_point.name)
        except Exception as error:  # a third-party plugin may raise anything at import
            _record_failure(entry_point.name, error)
    return pm


def load_failures() -> list[LoadFailure]:
    load_plugins()
    return list(_failures)


def _collect(hook_name: str) -> dict[str, list[Any]]:
    """Call one ``register_*`` hook plugin by plugin, so that an error names its plugin."""
    load_plugins()
    collected: dict[str, list[Any]] = {}
    for implementation in getattr(pm.hook, hook_name).get_hookimpls():
        items: list[Any] = []
        try:
            implementation.function(register=items.append)
        except Exception as error:
            _record_failure(implementation.plugin_name, error)
            continue
        collected[implementation.plugin_name] = items
    return collected


def _by_name(hook_name: str, kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for plugin_name, items in _collect(hook_name).items():
        for item in items:
            if item.name in found:
                raise EmuError(
                    f"{kind} '{item.name}' is registered by both plugin '{owners[item.name]}' "
                    f"and plugin '{plugin_name}'; uninstall one or set {ALLOW_LIST_VARIABLE}"
                )
            found[item.name] = item
            owners[item.name] = plugin_name
    return found


def get_backends() -> dict[str, Any]:
    """Every registered backend, by name."""
    return _by_name("register_backends", "backend")


def get_filters() -> dict[str, Any]:
    """Every registered curation filter, by name."""
    return _by_name("register_filters", "filter")


def get_judges() -> dict[str, Any]:
    """Every registered judge of generated images, by name."""
    return _by_name("register_judges", "judge")


def get_panels() -> dict[str, Any]:
    """Every registered annotator panel, by name."""
    return _by_name("register_panels", "panel")


def get_prompt_sets() -> dict[str, Any]:
    """Every registered prompt set, by name."""
    return _by_name("register_prompt_sets", "prompt set")


def get_captioners() -> dict[str, Any]:
    """Every registered captioner, by name."""
    return _by_name("register_captioners", "captioner")


def captioner(spec: str) -> Any:
    """The installed captioner ``NAME`` or ``NAME@SOURCE`` names."""
    name, _, source = spec.partition("@")
    found = _one(get_captioners(), "captioner", name)
    return found.from_source(source) if source else found


def _one(found: dict[str, Any], kind: str, name: str) -> Any:
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise EmuError(f"unknown {kind} '{name}' (registered: {known}); see `emu backends`")
    return found[name]


def get_judge(name: str) -> Any:
    return _one(get_judges(), "judge", name)


def judge(spec: str, *, complete: bool = True) -> Any:
    """The installed judge (or composition) a ``--judge`` spec names
    (:func:`emu_cli.judges.spec.judge_from_spec`)."""
    from emu_cli.judges.spec import judge_from_spec

    return judge_from_spec(spec, get_judges(), complete=complete)


def get_panel(name: str) -> Any:
    return _one(get_panels(), "panel", name)


def get_backend(name: str) -> Any:
    backends = get_backends()
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none installed"
        raise EmuError(f"unknown backend '{name}' (installed: {known}); see `emu backends`")
    return backends[name]


def plugin_infos() -> list[PluginInfo]:
    """What each loaded plugin is and provides, like ``llm plugins``."""
    backends = _collect("register_backends")
    filters = _collect("register_filters")
    judges = _collect("register_judges")
    panels = _collect("register_panels")
    prompt_sets = _collect("register_prompt_sets")
    captioners = _collect("register_captioners")
    infos = []
    for plugin_name, _plugin in pm.list_name_plugin():
        distribution = _distributions.get(plugin_name)
        version = None
        if distribution:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                version = importlib.metadata.version(distribution)
        infos.append(
            PluginInfo(
                name=plugin_name,
                distribution=distribution,
                version=version,
                backends=[b.name for b in backends.get(plugin_name, [])],
                filters=[f.name for f in filters.get(plugin_name, [])],
                judges=[j.name for j in judges.get(plugin_name, [])],
                panels=[p.name for p in panels.get(plugin_name, [])],
                prompt_sets=[p.name for p in prompt_sets.get(plugin_name, [])],
                captioners=[c.name for c in captioners.get(plugin_name, [])],
            )
        )
    return infos


def register_commands(cli: Any) -> None:
    """Let plugins add CLI commands; one that fails is reported, the CLI still works."""
    load_plugins()
    for implementation in pm.hook.register_commands.get_hookimpls():
        try:
            implementation.function(cli=cli)
        except Exception as error:
            _record_failure(implementation.plugin_name, error)
