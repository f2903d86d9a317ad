"""Judging a model while it trains: generate a fixed prompt set with fixed seeds, score the
images with a judge, and let a rule decide. Quality-tuning stops early on it; pre-training only
records the curve."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from emu_cli.errors import EmuError
from emu_cli.files import write_atomic
from emu_cli.images import save_grid
from emu_cli.plugin.backend import Backend, Model
from emu_cli.training.early_stopping import CurveOnly, Decision, EarlyStopping, read_curve

Rule = EarlyStopping | CurveOnly


@dataclass
class ValidationSettings:
    """What a validation generates and who judges it, by name (a judge spec, see
    :mod:`emu_cli.judges.spec`; a prompt file or ``builtin:NAME``), and how often (``None``: the
    command's ``default_every``)."""

    judge: str | None = None  # None: world for a world model, refused otherwise (judges.spec)
    prompts: str | None = None  # None: the world's validation prompts for a world model
    validate_every: int | None = None
    max_prompts: int | None = None  # a seeded sample of the prompt set (None: all of it)
    sample_steps: int = 20
    guidance: float | None = None  # None: the backend's default

    def resolved(self, world: bool, command: str) -> ValidationSettings:
        """These settings with the judge and prompts a model gets when none are named (the
        world's, for a model of the world; refused otherwise), checked before any work."""
        from emu_cli.evaluate.prompts import load_prompts
        from emu_cli.judges.spec import default_judge, default_prompts
        from emu_cli.plugin import registry

        judge = default_judge(self.judge, world, command, registry.get_judges())
        prompts = default_prompts(self.prompts, world, command)
        registry.judge(judge)  # an unknown name is refused now, not after training
        load_prompts(prompts)  # so is a prompt file that is missing or empty
        return dataclasses.replace(self, judge=judge, prompts=prompts)

    def describe(self, every: int | None) -> str:
        """One line for the run's plan (:mod:`emu_cli.training.plan`)."""
        prompts = f"{self.max_prompts} prompts of" if self.max_prompts else "the prompts of"
        return (
            f"every {every or self.validate_every} steps, judge {self.judge}, {prompts} "
            f"{self.prompts}, {self.sample_steps} sampling steps"
        )

    def monitor(
        self,
        backend: Backend,
        rule: Rule,
        folder: Path,
        *,
        seed: int,
        default_every: int | None = None,
    ) -> GenerationMonitor:
        from emu_cli.evaluate.prompts import load_prompts, sample_prompts
        from emu_cli.plugin import registry

        if self.judge is None or self.prompts is None:
            raise EmuError("validation settings were not resolved (ValidationSettings.resolved)")
        every = self.validate_every or default_every
        if every is None:
            raise ValueError("validate_every is not set and this command has no default")
        return GenerationMonitor(
            backend,
            registry.judge(self.judge),
            [p.text for p in sample_prompts(load_prompts(self.prompts), self.max_prompts, seed)],
            every=every,
            rule=rule,
            folder=folder,
            steps=self.sample_steps,
            guidance=self.guidance,
            seed=seed,
        )


def judged_reading(
    backend: Backend,
    model: Model,
    judge,
    prompts: list[str],
    *,
    steps: int,
    guidance: float,
    seed: int,
) -> tuple[list, float, float]:
    """One validation reading: the images for ``prompts`` (seed ``seed + i`` for prompt ``i``)
    and their mean judged appeal and faithfulness."""
    import torch

    from emu_cli.sampling import sample_in_batches

    with torch.no_grad():
        images = sample_in_batches(
            backend, model, prompts, steps=steps, guidance=guidance,
            seeds=[seed + i for i in range(len(prompts))], device=model.device,
            description="validation images",
        )  # fmt: skip
    scores = judge.score(images, prompts)
    return images, float(scores["appeal"].mean()), float(scores["faithfulness"].mean())


class GenerationMonitor:
    """Every ``every`` steps: images for ``prompts`` (seed ``seed + i`` for prompt ``i``),
    scored by ``judge``; the curve goes to ``folder/curve.json`` and ``curve.png``, each
    step's images to ``folder/validation/step-N.png``."""

    def __init__(
        self,
        backend: Backend,
        judge,
        prompts: list[str],
        *,
        every: int,
        rule: Rule,
        folder: Path,
        steps: int = 20,
        guidance: float | None = None,
        seed: int = 0,
    ):
        if every < 1:
            raise ValueError(f"validate_every must be >= 1, got {every}")
        if not prompts:
            raise ValueError("the validation prompt set is empty")
        self.backend, self.judge, self.prompts = backend, judge, prompts
        self.every, self.rule, self.folder = every, rule, Path(folder)
        self.steps, self.guidance, self.seed = steps, backend.guidance(guidance), seed

    @property
    def curve_path(self) -> Path:
        return self.folder / "curve.json"

    def check(self, step: int, model: Model) -> Decision:
        images, appeal, faithfulness = judged_reading(
            self.backend, model, self.judge, self.prompts,
            steps=self.steps, guidance=self.guidance, seed=self.seed,
        )  # fmt: skip
        decision = self.rule.update(step, appeal, faithfulness)
        save_grid(images, self.grid_path(step), captions=self.prompts)
        self._write()
        return decision

    def grid_path(self, step: int) -> Path:
        return self.folder / "validation" / f"step-{step:08d}.png"

    def restore(self, step: int) -> None:
        self.rule.restore(read_curve(self.curve_path, step))

    def _write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "judge": self.judge.spec,
            "prompts": len(self.prompts),
            "sample_steps": self.steps,
            "guidance": self.guidance,  # the backend's default unless the settings named one
            **self.rule.to_dict(),
        }
        write_atomic(self.curve_path, json.dumps(record, indent=2))
        plot_curve(self.rule, self.folder / "curve.png")


def plot_curve(rule: Rule, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p.step for p in rule.points]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot(steps, [p.appeal for p in rule.points], marker="o", label="appeal")
    if isinstance(rule, EarlyStopping) and rule.window > 1:  # what the best step is chosen on
        means = [rule.mean_appeal(p) for p in rule.points]
        axis.plot(steps, means, linestyle=":", label=f"appeal, mean of {rule.window}")
    axis.plot(steps, [p.faithfulness for p in rule.points], marker="s", label="faithfulness")
    if rule.best_step is not None:
        axis.axvline(rule.best_step, color="gray", linestyle="--", label="chosen step")
    axis.set_xlabel("training step")
    axis.set_ylabel("judged score (mean)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
