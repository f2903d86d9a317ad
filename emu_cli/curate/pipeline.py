"""``emu filter``: every sample of a pool through the filters, resumably, and accounted for.

1. Index the pool (image folders or WebDataset shards); unusable entries are rejected as
   ``input`` with the reason.
2. Scan, in parallel chunks: decode every sample (a defect is an ``input`` reject) and run the
   cheap ``scan`` filters (size, hashes).
3. Decide the scan filters over the whole pool, in order (duplicates need the whole pool).
4. Score, in parallel chunks, only the survivors with the ``score`` filters (OCR, CLIP...),
   a sample rejected by a by-value threshold skipping the costlier filters after it.
5. Decide the score filters in order (thresholds by kept fraction, concept caps), write the
   manifest (every sample, its scores, the first filter it failed), the kept image folder and
   a report.

Each chunk's result is written to ``OUT/.work`` as it finishes; a run started again on the
same ``OUT`` skips the chunks already there, so its manifest equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from emu_cli.curate.engines import open_engine
from emu_cli.curate.filter import PHASES, Batch, Filter, Item
from emu_cli.curate.resources import Resources
from emu_cli.data.export import refuse_to_replace, write_image_folder
from emu_cli.data.sources import Sample, SampleIndex, index_dataset
from emu_cli.errors import EmuError
from emu_cli.files import write_atomic
from emu_cli.lock import FolderLock

WORK = ".work"
INPUT = "input"  # the reject reason of samples that cannot be read at all
KEPT = "kept"
MANIFEST = "manifest.parquet"


@dataclass
class FilterSpec:
    """A filter by name and options: what crosses to worker processes."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def default_filters(clip_model: str | None) -> tuple[list[str], str]:
    """The default order's filters that can run with what was given (the CLIP-based ones only
    with a CLIP model; the aesthetic head only when named, since it needs its own file), and
    a sentence naming the others and why."""
    from emu_cli.curate.builtin import DEFAULT_ORDER

    without_clip = ("size", "duplicates", "ocr")
    chosen = [n for n in DEFAULT_ORDER if n != "aesthetic" and (clip_model or n in without_clip)]
    if clip_model:
        return chosen, "aesthetic (it runs when named, with --set aesthetic.weights=HEAD)"
    left = [n for n in DEFAULT_ORDER if n not in chosen]
    return chosen, (
        f"{', '.join(left)} (the CLIP-based filters need --clip-model; aesthetic also --set "
        "aesthetic.weights=HEAD)"
    )


def choose_filters(
    configured: Any, names: str | None, assignments: dict[str, Any], clip_model: str | None
) -> list[FilterSpec]:
    """Filters to run, in order, with options: a config file's ``filters:`` mapping, then the
    comma-separated ``names`` and ``NAME.OPTION`` ``assignments``. With neither names nor a
    config, the default order's filters that can run with what was given (the CLIP-based ones
    only with a CLIP model; the aesthetic head only when named, since it needs its own file)."""
    if configured is not None and not isinstance(configured, dict):
        raise EmuError("`filters:` in the config must map filter names to options")
    if names:
        chosen: dict[str, dict[str, Any]] = {n.strip(): {} for n in names.split(",") if n.strip()}
    elif configured is not None:
        chosen = {}
    else:
        chosen = {n: {} for n in default_filters(clip_model)[0]}
    for name, options in (configured or {}).items():
        if not names or name in chosen:
            chosen[name] = dict(options or {})
    for target, value in assignments.items():
        name, dot, option = target.partition(".")
        if not (dot and name and option):
            raise EmuError(f"--set '{target}' is not NAME.OPTION")
        chosen.setdefault(name, {})[option] = value
    return [FilterSpec(name, options) for name, options in chosen.items()]


@dataclass
class Outcome:
    total: int
    kept: int
    rejected_by: dict[str, int]
    out: Path

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "rejected_by": self.rejected_by}


def build_filters(specs: list[FilterSpec]) -> list[Filter]:
    from emu_cli.plugin import registry as plugins

    available = plugins.get_filters()
    filters = []
    for spec in specs:
        if spec.name not in available:
            known = ", ".join(sorted(available)) or "none"
            raise ValueError(f"unknown filter '{spec.name}' (installed: {known})")
        built = available[spec.name](**spec.options)
        if built.phase not in PHASES:
            raise ValueError(f"filter '{spec.name}' has phase '{built.phase}', not one of {PHASES}")
        filters.append(built)
    # Cheap scan filters always run before model-based ones, each group in the given order.
    return sorted(filters, key=lambda f: PHASES.index(f.phase))


_worker_filters: dict[str, list[Filter]] = {}


def _filters_in_worker(specs: list[FilterSpec], resources: Resources) -> list[Filter]:
    """Filters built and set up once per process, however many chunks it runs."""
    key = json.dumps([[s.name, s.options] for s in specs], sort_keys=True, default=str)
    if key not in _worker_filters:
        filters = build_filters(specs)
        for each in filters:
            each.setup(resources)
        _worker_filters[key] = filters
    return _worker_filters[key]


def _decode(samples: list[Sample]) -> tuple[list[Item], dict[str, str], dict[str, str]]:
    """Items for the readable samples; a reason for each unreadable one; each image's format."""
    from emu_cli.data.dataset import decode, read_bytes, to_rgb

    items, problems, formats = [], {}, {}
    for sample in samples:
        try:
            data = read_bytes(sample)
            raw = decode(data)
            if getattr(raw, "n_frames", 1) > 1:
                problems[sample.key] = f"animated image ({raw.n_frames} frames)"
                continue
            formats[sample.key] = (raw.format or "PNG").lower()
            items.append(Item(sample.key, sample.caption, to_rgb(raw), data))
        except Exception as error:  # PIL raises many types for broken files
            problems[sample.key] = f"unreadable image: {type(error).__name__}: {error}"
    return items, problems, formats


def _score_items(filters: list[Filter], items: list[Item], resources: Resources) -> pd.DataFrame:
    """Each filter's columns for the items; None where an earlier filter already rejected."""
    columns: dict[str, list] = {}
    alive = list(range(len(items)))
    cache: dict[str, Any] = {}  # shared across filters: embeddings are computed once per item
    for each in filters:
        if not alive:
            break
        scores = each.score(Batch([items[i] for i in alive], cache), resources)
        for column, values in scores.items():
            full = columns.setdefault(column, [None] * len(items))
            for position, value in zip(alive, values, strict=True):
                full[position] = value
        if each.decides_alone:
            reasons = each.decide(
                pd.DataFrame({c: [columns[c][i] for i in alive] for c in columns})
            )
            alive = [i for i, reason in zip(alive, reasons, strict=True) if reason is None]
    return pd.DataFrame({"key": [item.key for item in items], **columns})


def scan_chunk(task: tuple[list[Sample], list[FilterSpec], Resources]) -> pd.DataFrame:
    """Decode a chunk and run the scan filters (in a worker)."""
    samples, specs, resources = task
    filters = [f for f in _filters_in_worker(specs, resources) if f.phase == "scan"]
    items, problems, formats = _decode(samples)
    table = _score_items(filters, items, resources)
    table["format"] = [formats[key] for key in table["key"]]
    failed = pd.DataFrame({"key": list(problems), "problem": list(problems.values())})
    return pd.concat([table, failed], ignore_index=True)


def score_chunk(task: tuple[list[Sample], list[FilterSpec], Resources]) -> pd.DataFrame:
    """Decode a chunk of scan survivors and run the score filters (in a worker)."""
    samples, specs, resources = task
    filters = [f for f in _filters_in_worker(specs, resources) if f.phase == "score"]
    items, _problems, _formats = _decode(samples)  # all decoded once already in the scan
    return _score_items(filters, items, resources)


class FilterRun:
    """One ``emu filter`` run over a pool into ``out``."""

    def __init__(
        self,
        source: Path,
        out: Path,
        specs: list[FilterSpec],
        resources: Resources,
        *,
        engine: str = "local",
        workers: int | None = None,
        chunk_size: int = 256,
        progress: bool = True,
    ):
        self.source, self.out = Path(source), Path(out)
        self.specs, self.resources = specs, resources
        self.filters = build_filters(specs)
        self.engine, self.chunk_size, self.progress = engine, chunk_size, progress
        self.workers = workers or min(os.cpu_count() or 1, 8)
        self.work = self.out / WORK

    def _check_plan(self, index: SampleIndex) -> None:
        """A run resumes only with the settings it started with; one that finished no chunk
        (it failed to start: a model that would not load, say) has nothing to resume and
        is started over with the new settings."""
        plan = {
            "source": str(self.source.resolve()),
            "fingerprint": index.fingerprint(),
            "chunk_size": self.chunk_size,
            "filters": [[f.name, f.config()] for f in self.filters],
            "clip": [self.resources.clip_model, self.resources.clip_pretrained],
        }
        text = json.dumps(plan, indent=2, sort_keys=True, default=str)
        path = self.work / "plan.json"
        finished = path.exists() and any(self.work.glob("*.parquet"))
        recorded = path.read_text() if finished else text
        if recorded != text:
            changed = _plan_changes(json.loads(recorded), json.loads(text))
            raise ValueError(
                f"'{self.out}' holds an unfinished run with other data or settings "
                f"({changed}); use another --out, or delete it to start over"
            )
        self.work.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)

    def _phase(self, engine, name: str, function, samples: list[Sample]) -> pd.DataFrame:
        """Run a phase chunk by chunk, skipping chunks a previous run finished."""
        chunks = {
            number: samples[start : start + self.chunk_size]
            for number, start in enumerate(range(0, len(samples), self.chunk_size))
        }
        path = {n: self.work / f"{name}-{n:06d}.parquet" for n in chunks}
        todo = {n: (chunk, self.specs, self.resources) for n, chunk in chunks.items()}
        todo = {n: task for n, task in todo.items() if not path[n].exists()}
        bar = tqdm(
            total=len(samples),
            initial=len(samples) - sum(len(task[0]) for task in todo.values()),
            desc=name,
            unit="img",
            disable=not self.progress,
        )
        for number, table in engine.run(function, todo):
            write_atomic(path[number], table.to_parquet(index=False))
            bar.update(len(chunks[number]))
        bar.close()
        tables = [pd.read_parquet(path[n]) for n in chunks]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({"key": []})

    def run(self) -> Outcome:
        with FolderLock(self.out, "emu filter"):  # one run writes a folder at a time
            return self._run()

    def _run(self) -> Outcome:
        refuse_to_replace(self.out / KEPT, self.source)  # before the work, not after it
        readers = [f.name for f in self.filters if f.reads_captions]
        index = index_dataset(
            self.source, captions_for=f"filter {', '.join(readers)}" if readers else None
        )
        self._check_plan(index)
        by_key = {sample.key: sample for sample in index.samples}
        order = {sample.key: number for number, sample in enumerate(index.samples)}

        with open_engine(self.engine, self.workers) as engine:
            table = self._filter(engine, index)
        rejected_at_index = pd.DataFrame(
            {
                "key": [key for key, _ in index.rejected],
                "caption": None,
                "reason": INPUT,
                "detail": [why for _, why in index.rejected],
            }
        )
        table = pd.concat([table, rejected_at_index], ignore_index=True)
        # Columns named _like_this are filters' working data (thumbnails), not results.
        table = table.drop(columns=[c for c in table.columns if c.startswith("_")])
        table.insert(2, "status", table["reason"].isna().map({True: "kept", False: "rejected"}))
        write_atomic(self.out / MANIFEST, table.to_parquet(index=False))
        self._write_kept(table[table["status"] == "kept"], by_key, order)
        from emu_cli.curate.report import write_report

        outcome = Outcome(
            total=len(table),
            kept=int((table["status"] == "kept").sum()),
            rejected_by={
                name: int(count) for name, count in table["reason"].value_counts(sort=False).items()
            },
            out=self.out,
        )
        settings = {"filters": {f.name: f.config() for f in self.filters}}
        write_report(
            table, [f.name for f in self.filters], by_key, self.out, outcome.as_dict() | settings
        )
        return outcome

    def _filter(self, engine, index: SampleIndex) -> pd.DataFrame:
        """Scan, decide the scan filters, score the survivors, decide the score filters."""
        by_key = {sample.key: sample for sample in index.samples}
        scanned = self._phase(engine, "scan", scan_chunk, index.samples)
        table = scanned.set_index("key").reindex([s.key for s in index.samples]).reset_index()
        table.insert(1, "caption", [s.caption for s in index.samples])
        table["reason"] = pd.Series([None] * len(table), dtype=object)
        problems = table.pop("problem") if "problem" in table else pd.Series(index=table.index)
        table["detail"] = problems.astype(object).where(problems.notna(), None)
        table.loc[table["detail"].notna(), "reason"] = INPUT
        self._decide(table, "scan")

        survivors = [by_key[k] for k in table.loc[table["reason"].isna(), "key"]]
        scored = self._phase(engine, "score", score_chunk, survivors)
        if len(scored.columns) > 1:
            table = table.merge(scored, on="key", how="left")
        self._decide(table, "score")

        return table

    def _decide(self, table: pd.DataFrame, phase: str) -> None:
        for each in self.filters:
            if each.phase != phase:
                continue
            candidates = table[table["reason"].isna()]
            if candidates.empty:
                continue
            reasons = each.decide(candidates)
            failed = reasons[reasons.notna()].index
            table.loc[failed, "reason"] = each.name
            table.loc[failed, "detail"] = reasons[failed]

    def _write_kept(
        self, kept: pd.DataFrame, by_key: dict[str, Sample], order: dict[str, int]
    ) -> None:
        """The kept samples as an image folder with metadata.jsonl, replaced as a whole."""
        score_columns = [
            c
            for c in kept.columns
            if c not in ("key", "caption", "status", "reason", "detail", "format", "sha256")
        ]

        def entries():
            for row in kept.to_dict("records"):
                name = f"images/{order[row['key']]:08d}"
                extra = {c: _plain(row[c]) for c in score_columns}
                record = {"text": row["caption"], "source_key": row["key"]} | extra
                yield by_key[row["key"]], name, record

        write_image_folder(self.out / KEPT, entries(), self.source)


def _plan_changes(before: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between a run's recorded plan and this one, in words."""
    changes = []
    for key in sorted(set(before) | set(now)):
        if key == "filters":
            old, new = dict(before.get(key, [])), dict(now.get(key, []))
            if list(old) != list(new):
                changes.append(f"filters {', '.join(old)} -> {', '.join(new)}")
            changes += [f"{name} options" for name in new if name in old and old[name] != new[name]]
        elif before.get(key) != now.get(key):
            changes.append("data" if key == "fingerprint" else key.replace("_", " "))
    return "; ".join(changes) + " changed"


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (numpy numbers, NaN) for metadata.jsonl."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value
