"""emu: the Emu quality-tuning recipe as a toolkit.

The public API, what a plugin or a script uses (``docs/plugins.md``). Importing it loads no
torch: the contract modules are light, and a backend imports its models inside its methods.
"""

from emu_cli.curate.batch import Batch, Item
from emu_cli.curate.filter import Filter, Threshold
from emu_cli.data.framing import Framing
from emu_cli.errors import EmuError
from emu_cli.plugin.backend import (
    Backend,
    Model,
    ScaledLearningRates,
    Stage,
    adopted_provenance,
    checked_options,
    component_config,
    stage_defaults,
)
from emu_cli.plugin.captioner import Captioner
from emu_cli.plugin.hookspecs import hookimpl
from emu_cli.plugin.judge import Judge
from emu_cli.plugin.panel import FilteringResult, Pair, Panel
from emu_cli.plugin.prompt_set import Prompt, PromptSet
from emu_cli.training.recipe import Recipe
from emu_cli.version import __version__

__all__ = [
    "Backend",
    "Batch",
    "Captioner",
    "EmuError",
    "Filter",
    "FilteringResult",
    "Framing",
    "Item",
    "Judge",
    "Model",
    "Pair",
    "Panel",
    "Prompt",
    "PromptSet",
    "Recipe",
    "ScaledLearningRates",
    "Stage",
    "Threshold",
    "__version__",
    "adopted_provenance",
    "checked_options",
    "component_config",
    "hookimpl",
    "stage_defaults",
]
