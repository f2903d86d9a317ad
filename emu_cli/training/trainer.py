"""The shared trainer: one loop for every backend and stage, for pre-training and quality-tuning.

Every random draw of a step comes from generators seeded by (seed, stage, step, process) and
the data position is the step number, so a run killed at any point and resumed from its last
checkpoint ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from emu_cli.checkpoint import state as checkpoints
from emu_cli.checkpoint.provenance import Provenance
from emu_cli.data.buckets import BucketBatches, Buckets, assign_buckets, bucket_groups
from emu_cli.data.dataset import StepBatches, TrainingDataset, collate, image_sizes
from emu_cli.data.sources import SampleIndex
from emu_cli.files import write_atomic
from emu_cli.images import save_grid
from emu_cli.plugin.backend import Backend, Model, ScaledLearningRates, encode_batch
from emu_cli.training.divergence import LossGuard, TrainingDiverged, record_divergence
from emu_cli.training.ema import EMA
from emu_cli.training.recipe import Recipe
from emu_cli.training.report import TrainingLog
from emu_cli.training.trackers import StageTrackers

if TYPE_CHECKING:
    from emu_cli.training.early_stopping import Decision
    from emu_cli.training.set_aside import SetAside
    from emu_cli.training.validation import GenerationMonitor

PREVIEW_SAMPLES = 8
SKIPPED_NAMED = 5


@dataclass
class StageResult:
    stage: str
    steps: int
    final_loss: float
    images_per_second: float
    skipped_samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: str | None = None  # why, when a monitor stopped the stage


def step_seed(seed: int, stage: str, step: int, rank: int, micro: int = 0) -> int:
    """The seed of every random draw of one micro-batch: a pure function of where it is."""
    digest = hashlib.sha256(f"{seed}/{stage}/{step}/{rank}/{micro}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def parameter_groups(module: torch.nn.Module, learning_rate: float) -> list[dict[str, Any]]:
    """The parameters ``module`` trains, as optimizer groups: the submodules a
    :class:`ScaledLearningRates` module names learn at their fraction of ``learning_rate``."""
    scales = module.learning_rate_scales if isinstance(module, ScaledLearningRates) else {}
    grouped: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            scale = scales.get(name.split(".", 1)[0], 1.0)
            grouped.setdefault(scale, []).append(parameter)
    return [{"params": params, "lr": learning_rate * scale} for scale, params in grouped.items()]


def optimizer_class(recipe: Recipe) -> type[torch.optim.Optimizer]:
    """The optimizer a recipe names: torch's AdamW, or bitsandbytes' 8-bit one (its state
    quantised blockwise; it steps on CPUs as well as on CUDA)."""
    if recipe.optimizer == "adamw8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit
    return torch.optim.AdamW


def checkpoint_activations(module: torch.nn.Module, what: str) -> list[str]:
    """Turn on gradient checkpointing in every trained diffusers or transformers model inside
    ``module`` (their own implementations); the names of those it reached. A stage none of
    whose trained networks supports it is refused."""
    reached = []
    for name, child in module.named_modules():
        supports = getattr(child, "_supports_gradient_checkpointing", False) or getattr(
            child, "supports_gradient_checkpointing", False
        )  # diffusers' models say the first, transformers' the second
        if not supports or not any(p.requires_grad for p in child.parameters()):
            continue
        if hasattr(child, "enable_gradient_checkpointing"):
            child.enable_gradient_checkpointing()
        else:
            child.gradient_checkpointing_enable()
        reached.append(name)
    if not reached:
        raise ValueError(f"{what} trains no network that supports gradient checkpointing")
    return reached


def learning_rate_factor(recipe: Recipe) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        if recipe.lr_schedule == "constant":
            return 1.0
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def split_holdout(index: SampleIndex, seed: int) -> tuple[SampleIndex, SampleIndex]:
    """A few samples kept out of training for previews and held-out metrics (e.g. PSNR)."""
    size = len(index.samples)
    count = min(PREVIEW_SAMPLES, size // 10)
    if count == 0:  # too small to hold anything out: preview on training samples
        return index, SampleIndex(index.source, index.samples[:PREVIEW_SAMPLES])
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:count])
    train = [s for i, s in enumerate(index.samples) if i not in held]
    return (
        SampleIndex(index.source, train, index.rejected),
        SampleIndex(index.source, [index.samples[i] for i in sorted(held)]),
    )


def bucket_multiple(backend: Backend, model: Model, stage: str, recipe: Recipe) -> int | None:
    """What ``stage``'s image sides are multiples of in aspect buckets; None where the recipe
    turns them off or the backend takes square images only."""
    return backend.size_multiple(model, stage) if recipe.aspect_buckets else None


def training_buckets(
    image_sizes: Mapping[str, tuple[int, int] | None], resolution: int, multiple: int | None
) -> Buckets | None:
    """The aspect buckets of the images (sizes by key) at ``resolution``: None without a
    ``multiple`` (:func:`bucket_multiple`) or where every image falls in the square bucket
    (then the batches are exactly the square ones, as before buckets)."""
    if multiple is None:
        return None
    buckets = assign_buckets(image_sizes, resolution, multiple)
    return None if set(buckets.size_of.values()) == {(resolution, resolution)} else buckets


class Trainer:
    """Trains one stage of one backend's model on one dataset under a recipe."""

    def __init__(
        self,
        backend: Backend,
        model: Model,
        stage: str,
        recipe: Recipe,
        index: SampleIndex,
        folder: Path,
        accelerator: Any,
        *,
        encode: Callable[..., dict] | None = None,
        monitor: GenerationMonitor | None = None,
        step_offset: int = 0,
        sizes: Mapping[str, tuple[int, int] | None] | None = None,
        set_aside: SetAside | None = None,
    ):
        """``encode`` replaces :func:`~emu_cli.plugin.backend.encode_batch` (quality-tuning
        passes a cache); ``monitor``, when given, judges the model every ``monitor.every``
        steps (see :class:`emu_cli.training.validation.GenerationMonitor`): its best weights
        are kept in ``folder/best`` and it may stop the stage early. ``step_offset``: the steps
        of the run's stages before this one, where the trackers' steps go on from. ``sizes``:
        the samples' image sizes by key where the caller read them already (read here when
        buckets need them, once for every phase). ``set_aside``: components released while
        the steps run (with a cached ``encode``), made whole to sample and save."""
        self.backend, self.model, self.stage = backend, model, stage
        self.encode = encode or functools.partial(encode_batch, backend)
        self.monitor = monitor
        self.recipe = recipe.validate()
        self.folder = folder
        self.accelerator = accelerator
        self.train_index, self.holdout_index = split_holdout(index, recipe.seed)
        self.log = TrainingLog(
            folder,
            enabled=accelerator.is_main_process,
            trackers=StageTrackers(accelerator, stage, step_offset),
        )
        self.skipped: list[tuple[str, str]] = []
        self.multiple = bucket_multiple(backend, model, stage, recipe)
        self.sizes = sizes
        self.set_aside = set_aside

    # -- pieces -------------------------------------------------------------------------
    def _loader(self, resolution: int, first: int, count: int) -> torch.utils.data.DataLoader:
        recipe, accelerator = self.recipe, self.accelerator
        if self.multiple is not None and self.sizes is None:
            self.sizes = image_sizes(self.train_index.samples)
        buckets = training_buckets(self.sizes or {}, resolution, self.multiple)
        if accelerator.is_main_process and buckets is not None:
            tqdm.write(f"{self.stage} at {resolution} px: {buckets.describe()}")
            write_atomic(self.folder / f"buckets-{resolution}.json", json.dumps(buckets.record()))
        dataset = TrainingDataset(
            self.train_index,
            resolution,
            seed=recipe.seed,
            random_flip=recipe.random_flip,
            caption_dropout=recipe.caption_dropout,
            sizes=buckets.size_of if buckets else None,
        )
        micro = recipe.gradient_accumulation_steps
        order = (
            StepBatches(len(dataset), recipe.batch_size, accelerator.num_processes,
                        accelerator.process_index, recipe.seed, first * micro, count * micro)
            if buckets is None
            else BucketBatches(bucket_groups(self.train_index, buckets), recipe.batch_size,
                               accelerator.num_processes, accelerator.process_index, recipe.seed,
                               first * micro, count * micro)
        )  # fmt: skip
        workers = recipe.num_workers
        if workers < 0:  # auto: decoding inline is cheap next to a CPU training step
            workers = 0 if accelerator.device.type == "cpu" else 4
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=order, collate_fn=collate, num_workers=workers
        )

    def _whole(self) -> AbstractContextManager:
        """The model with every component in place, for a block that samples or saves."""
        return self.set_aside.whole() if self.set_aside else nullcontext()

    def _save_model(self, path: Path, provenance: Provenance) -> None:
        from emu_cli.checkpoint.folder import write_model

        with self._whole():
            write_model(self.backend, self.model, path, provenance)

    def _preview(self, step: int, ema: EMA | None) -> dict[str, float]:
        if not self.accelerator.is_main_process:
            return {}
        images, captions = [], []
        dataset = TrainingDataset(self.holdout_index, self._resolution_at(step), random_flip=False)
        for i in range(len(dataset)):
            image, caption, _, _ = dataset[i]
            images.append(image)
            captions.append(caption)
        if ema is not None:
            ema.swap_in()
        try:
            batch = torch.stack(images).to(self.accelerator.device)
            with self._whole():
                pictures, metrics = self.backend.preview(
                    self.model, self.stage, batch, captions, seed=self.recipe.seed
                )
        finally:
            if ema is not None:
                ema.swap_out()
        grid = self.folder / "previews" / f"step-{step:08d}.png"
        # a denoiser's preview draws each holdout caption; an autoencoder's pairs images
        save_grid(pictures, grid, captions=captions if len(pictures) == len(captions) else None)
        self.log.image(step, "preview", grid)
        return metrics

    def _prepare(self, device: torch.device) -> None:
        """Let the backend see one batch of training data, at the resolution the stage ends
        at (the one its model will generate at), before the stage starts."""
        final = self.recipe.phases()[-1][0]
        dataset = TrainingDataset(self.train_index, final, random_flip=False)
        items = [dataset[i] for i in range(min(len(dataset), self.recipe.batch_size))]
        images, captions, _, _ = collate(items)
        self.backend.prepare_stage(self.model, self.stage, images.to(device), captions)

    def _validate(self, step: int, ema: EMA | None, provenance: Provenance) -> Decision:
        """The monitor's decision at ``step``, taken on the averaged weights by process 0 and
        shared with the others."""
        from accelerate.utils import broadcast_object_list

        from emu_cli.checkpoint.folder import save_checkpoint

        decision = [None]
        if self.accelerator.is_main_process:
            if ema is not None:
                ema.swap_in()
            try:
                with self._whole():
                    decision[0] = self.monitor.check(step, self.model)
                    if decision[0].best:
                        record = provenance.with_changes(stage=self.stage, step=step)
                        save_checkpoint(self.backend, self.model, self.folder / "best", record)
                point = self.monitor.rule.points[-1]
                self.log.write(
                    step=step,
                    validation_appeal=point.appeal,
                    validation_faithfulness=point.faithfulness,
                )
                self.log.image(step, "validation", self.monitor.grid_path(step))
            finally:
                if ema is not None:
                    ema.swap_out()
        if self.accelerator.num_processes > 1:
            broadcast_object_list(decision)
        return decision[0]

    def _resolution_at(self, step: int) -> int:
        passed = 0
        for resolution, steps in self.recipe.phases():
            passed += steps
            if step < passed:
                return resolution
        return self.recipe.phases()[-1][0]

    # -- the loop -----------------------------------------------------------------------
    def run(self, resume_from: Path | None, provenance: Provenance | None = None) -> StageResult:
        """Train the stage from its start, or from the checkpoint ``resume_from``; checkpoints
        and the best model carry ``provenance`` with this stage and step."""
        accelerator = self.accelerator
        self.model.to(accelerator.device)
        # Stages may accumulate differently; the Accelerator is shared by all of them.
        accelerator.gradient_accumulation_steps = self.recipe.gradient_accumulation_steps
        if resume_from is None:
            self._prepare(accelerator.device)
        if accelerator.is_main_process and self.recipe.aspect_buckets and self.multiple is None:
            tqdm.write(f"{self.stage}: centre squares (backend '{self.backend.name}' takes "
                       "square images only at this stage)")  # fmt: skip
        run = self._optimization(resume_from, provenance or Provenance(backend=self.backend.name))
        progress = tqdm(
            total=self.recipe.steps,
            initial=run.step,
            desc=f"{self.backend.name}/{self.stage}",
            disable=not accelerator.is_main_process,
            dynamic_ncols=True,
        )
        if self.monitor is not None and run.step == 0:
            self._validate(0, None, run.provenance)  # the starting model: the curve's baseline
        if self.set_aside is not None:
            self.set_aside.release()
        try:
            phase_end = 0
            for resolution, phase_steps in self.recipe.phases():
                phase_end += phase_steps
                if run.step >= phase_end:
                    continue
                loader = iter(self._loader(resolution, run.step, phase_end - run.step))
                while run.step < phase_end and run.stop is None:
                    step_started = time.perf_counter()
                    outputs = self._step(run, loader, progress)
                    self._after_step(run, outputs, resolution, step_started, progress)
                if run.stop is not None:
                    break
        finally:
            if self.set_aside is not None and self.set_aside.released:
                self.set_aside.restore()
        progress.close()
        return self._finish(run)

    def _optimization(self, resume_from: Path | None, provenance: Provenance) -> _Run:
        """The training module, its optimizer, schedule and EMA, restored from ``resume_from``
        where given (with the random state and the log as they were at that step)."""
        recipe, backend = self.recipe, self.backend
        module = backend.training_module(self.model, self.stage, recipe)
        if recipe.gradient_checkpointing:
            checkpoint_activations(module, f"stage '{self.stage}' of backend '{backend.name}'")
        groups = parameter_groups(module, recipe.learning_rate)
        rates = [group["lr"] for group in groups]  # before the optimizer's schedule scales them
        parameters = [p for group in groups for p in group["params"]]
        if not parameters:
            raise ValueError(f"stage '{self.stage}' of backend '{backend.name}' trains nothing")
        optimizer = optimizer_class(recipe)(
            groups,
            lr=recipe.learning_rate,
            betas=(recipe.adam_beta1, recipe.adam_beta2),
            weight_decay=recipe.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(recipe))
        ema = EMA(parameters, recipe.ema_decay) if recipe.ema_decay > 0 else None
        guard = LossGuard(recipe.loss_spike_factor)
        start = 0
        if resume_from is not None:
            resumed = checkpoints.read_checkpoint(resume_from)
            start = resumed.step
            checkpoints.restore_optimizer(optimizer, resumed)
            scheduler.load_state_dict(resumed.meta["scheduler"])
            # the recipe's rates, not the checkpoint's: a diverged stage resumes with a lower one
            scheduler.base_lrs = rates
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["initial_lr"] = base
                group["lr"] = base * scheduler.lr_lambdas[0](scheduler.last_epoch)
            guard.restore(resumed.meta.get("loss_guard", {}))
            checkpoints.restore_rng(resumed.tensors, resumed.meta)
            if ema is not None:
                ema.load_state_tensors(resumed.tensors, resumed.meta["ema_updates"])
            self.skipped = [tuple(s) for s in resumed.meta.get("skipped", [])]
        # what a killed run logged after the step this one starts at (all of it, when no
        # intact checkpoint was left and the stage starts over)
        self.log.truncate_after(start)
        if self.monitor is not None:
            self.monitor.restore(start)
        prepared, optimizer = self.accelerator.prepare(module, optimizer)
        return _Run(prepared, parameters, optimizer, scheduler, ema, provenance, guard, step=start)

    def _step(self, run: _Run, loader: Any, progress: Any) -> dict[str, torch.Tensor]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches."""
        recipe, accelerator = self.recipe, self.accelerator
        for micro in range(recipe.gradient_accumulation_steps):
            images, captions, framings, skipped = next(loader)
            self.skipped.extend(skipped)
            with torch.no_grad():
                images = images.to(accelerator.device)
                batch = self.encode(self.model, self.stage, images, captions, framings)
            seed = step_seed(recipe.seed, self.stage, run.step, accelerator.process_index, micro)
            batch["generator"] = torch.Generator(accelerator.device).manual_seed(seed)
            with accelerator.accumulate(run.module):
                with recipe.attention_kernel(accelerator.device):
                    outputs = run.module(batch)
                loss = outputs["loss"]
                mean_loss = accelerator.reduce(loss.detach(), "mean")
                if not torch.isfinite(mean_loss):
                    self._diverged(run, "loss", mean_loss.item(), progress)
                accelerator.backward(loss)
                if accelerator.sync_gradients and recipe.max_grad_norm > 0:
                    norm = accelerator.clip_grad_norm_(run.parameters, recipe.max_grad_norm)
                    # fp16's loss scaler skips the steps whose gradients overflow, by design
                    if recipe.mixed_precision != "fp16" and not torch.isfinite(norm):
                        self._diverged(run, "gradient norm", norm.item(), progress)
                run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update()
        run.step += 1
        global_batch = recipe.batch_size * accelerator.num_processes
        run.images_seen += global_batch * recipe.gradient_accumulation_steps
        run.loss = mean_loss.item()
        note = run.guard.observe(run.step, run.loss)
        if note and accelerator.is_main_process:
            tqdm.write(note)
        return outputs

    def _diverged(self, run: _Run, what: str, value: float, progress: Any) -> None:
        """Stop the stage: ``what`` became ``value`` at the step being taken."""
        progress.close()
        step = run.step + 1  # the step as the log counts it
        if not self.accelerator.is_main_process:
            raise TrainingDiverged(f"the {what} of stage '{self.stage}' became {value}")
        self.log.write(step=step, diverged=what)
        raise TrainingDiverged(
            record_divergence(self.folder, self.stage, step, what, value, run.guard)
        )

    def _after_step(
        self,
        run: _Run,
        outputs: dict[str, torch.Tensor],
        resolution: int,
        step_started: float,
        progress: Any,
    ) -> None:
        """Log the step; preview, validate (which may stop the stage) and checkpoint on their
        intervals."""
        recipe, step = self.recipe, run.step
        rate = run.images_seen / (time.perf_counter() - run.started)
        progress.update(1)
        progress.set_postfix(loss=f"{run.loss:.4f}", img_s=f"{rate:.1f}", res=resolution)
        logged = {k: float(v) for k, v in outputs.items() if k != "loss" and v.numel() == 1}
        self.log.write(
            step=step,
            loss=run.loss,
            lr=run.scheduler.get_last_lr()[0],
            images_per_second=rate,
            # this step alone (a stall shows here; previews and validation excluded)
            step_seconds=time.perf_counter() - step_started,
            resolution=resolution,
            **logged,
        )
        self.log.plot_if_due()
        if recipe.preview_every > 0 and (step % recipe.preview_every == 0 or step == recipe.steps):
            run.metrics = self._preview(step, run.ema)
            if run.metrics:
                self.log.write(step=step, **{f"holdout_{k}": v for k, v in run.metrics.items()})
        if self.monitor is not None and (step % self.monitor.every == 0 or step == recipe.steps):
            decision = self._validate(step, run.ema, run.provenance)
            if decision.stop:
                run.stop = decision.reason
                tqdm.write(f"stopping early at step {step}: {run.stop}")
        due = recipe.checkpoint_every > 0 and step % recipe.checkpoint_every == 0
        if (due or run.checkpoint_owed) and step < recipe.steps:
            # one that falls due in a spike waits for the loss to settle (training.divergence)
            run.checkpoint_owed = not run.guard.settled
            if not run.checkpoint_owed:
                self._checkpoint(run)
                self.accelerator.wait_for_everyone()

    def _checkpoint(self, run: _Run) -> Path | None:
        if not self.accelerator.is_main_process:
            return None
        meta = {
            "ema_updates": run.ema.updates if run.ema else 0,
            "skipped": self.skipped[:1000],
            "loss_guard": run.guard.state(),
        }
        tensors = run.ema.state_tensors() if run.ema else {}
        record = run.provenance.with_changes(stage=self.stage, step=run.step)
        path = checkpoints.write_checkpoint(
            self.folder / "checkpoints",
            run.step,
            lambda p: self._save_model(p, record),
            run.optimizer,
            run.scheduler,
            tensors,
            meta,
            self.recipe.keep_checkpoints,
        )
        self.log.plot()
        return path

    def _finish(self, run: _Run) -> StageResult:
        """The stage's result is its averaged model; write its summary."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if run.ema is not None:
            run.ema.swap_in()
        self.log.plot()
        if self.skipped and accelerator.is_main_process:
            named = "; ".join(f"{k} ({r})" for k, r in self.skipped[:SKIPPED_NAMED])
            tqdm.write(f"skipped {len(self.skipped)} unreadable samples, e.g. {named}")
        elapsed = time.perf_counter() - run.started
        summary = {
            "stage": self.stage,
            "steps": run.step,
            "final_loss": run.loss,
            "images_per_second": run.images_seen / elapsed if elapsed else 0.0,
            "skipped_samples": len(self.skipped),
            "skipped_examples": self.skipped[:SKIPPED_NAMED],
            "metrics": run.metrics,
            "processes": accelerator.num_processes,
            "stopped_early": run.stop,
        }
        if accelerator.is_main_process:
            (self.folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return StageResult(
            self.stage,
            run.step,
            run.loss,
            summary["images_per_second"],
            len(self.skipped),
            run.metrics,
            run.stop,
        )


@dataclass
class _Run:
    """What one run of a stage carries from step to step."""

    module: torch.nn.Module  # the training module, prepared by accelerate
    parameters: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    ema: EMA | None
    provenance: Provenance
    guard: LossGuard
    step: int = 0
    images_seen: int = 0
    loss: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)
    stop: str | None = None  # why a monitor stopped the stage
    checkpoint_owed: bool = False  # one fell due while the loss spiked
    started: float = field(default_factory=time.perf_counter)
