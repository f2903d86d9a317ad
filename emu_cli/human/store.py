"""Human judgements in one SQLite file (WAL): filtering decisions, captions, side-by-side votes.

People in the review app and the world's simulated annotators write the same tables, so one
export and one win-rate computation serve both. WAL lets many annotators write while others
read; every write is its own short transaction, so a killed server loses nothing it confirmed.

Decisions and captions belong to a dataset: two folders beside each other share a store but not
their decisions on files of the same name. A dataset is known by its folder and by what it
holds (its fingerprint): a folder that grows keeps its decisions, and so does one moved whole.
Rows of a store written before datasets were told apart go to the first dataset opened on it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu_cli.data.sources import MAX_CAPTION_CHARS, SampleIndex

STAGES = ("generalist", "specialist")
PROTOCOLS = {
    # caption hidden, choose the more appealing picture
    "appeal": ("a", "b", "tie"),
    # caption shown, choose the more faithful picture; both and neither count as ties
    "faithfulness": ("a", "b", "both", "neither"),
}
CHECKLIST = ("composition", "lighting", "color_contrast", "subject_background", "subjective")

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('person', 'simulated')),
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    path TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    dataset TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL,
    item TEXT NOT NULL,
    annotator TEXT NOT NULL REFERENCES annotators(name),
    keep INTEGER NOT NULL CHECK (keep IN (0, 1)),
    checklist TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (dataset, stage, item, annotator)
);
CREATE TABLE IF NOT EXISTS captions (
    dataset TEXT NOT NULL DEFAULT '',
    item TEXT NOT NULL,
    annotator TEXT NOT NULL REFERENCES annotators(name),
    text TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (dataset, item, annotator)
);
CREATE TABLE IF NOT EXISTS comparisons (
    id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    image_a TEXT NOT NULL,
    image_b TEXT NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    annotator TEXT NOT NULL UNIQUE REFERENCES annotators(name)
);
CREATE TABLE IF NOT EXISTS votes (
    comparison TEXT NOT NULL REFERENCES comparisons(id),
    protocol TEXT NOT NULL,
    annotator TEXT NOT NULL REFERENCES annotators(name),
    shown_left TEXT NOT NULL CHECK (shown_left IN ('a', 'b')),
    choice TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (comparison, protocol, annotator)
);
"""


def _create(table: str) -> str:
    """The statement of SCHEMA that creates ``table``."""
    head = f"CREATE TABLE IF NOT EXISTS {table} ("
    start = SCHEMA.index(head)
    return SCHEMA[start : SCHEMA.index(");", start) + 2]


@dataclass(frozen=True)
class Vote:
    comparison: str
    protocol: str
    annotator: str
    shown_left: str
    choice: str  # in terms of the models, a or b, whatever side each was shown on


DECISION = "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)"
# the tables whose rows belong to a dataset, and their columns before they did
PER_DATASET = {
    "decisions": "stage, item, annotator, keep, checklist, created",
    "captions": "item, annotator, text, created",
}


@dataclass(frozen=True)
class Dataset:
    """A dataset as the store knows it: its folder (resolved) and its fingerprint."""

    path: str
    fingerprint: str

    @classmethod
    def of(cls, index: SampleIndex) -> Dataset:
        return cls(str(Path(index.source).resolve()), index.fingerprint())


class AnnotationStore:
    """One SQLite file. Open one store per thread or process; SQLite does the locking.
    Decisions and captions are those of ``dataset`` (see the module's note); without one, of
    a dataset with no name (stores that hold only votes, tests)."""

    def __init__(self, path: Path | str, dataset: Dataset | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute("PRAGMA foreign_keys=ON")
        self._key_rows_by_dataset()
        self.connection.executescript(SCHEMA)
        self.dataset = "" if dataset is None else self._dataset_key(dataset)

    def _key_rows_by_dataset(self) -> None:
        """Give the tables of a store written before datasets were told apart their column."""
        with self.transaction() as connection:
            for table, columns in PER_DATASET.items():
                names = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
                if not names or "dataset" in names:
                    continue
                connection.execute(f"ALTER TABLE {table} RENAME TO {table}_before_datasets")
                connection.execute(_create(table))
                connection.execute(
                    f"INSERT INTO {table} (dataset, {columns}) "
                    f"SELECT '', {columns} FROM {table}_before_datasets"
                )
                connection.execute(f"DROP TABLE {table}_before_datasets")

    def _dataset_key(self, dataset: Dataset) -> str:
        """The key of ``dataset``'s rows: the one its folder had, or that of a folder holding
        the same samples (it was moved), or a new one; the first dataset takes the rows of
        before datasets were told apart."""
        with self.transaction() as connection:
            row = connection.execute(
                "SELECT key FROM datasets WHERE path = ?", (dataset.path,)
            ).fetchone()
            if row is not None:  # the same folder, maybe grown
                connection.execute(
                    "UPDATE datasets SET fingerprint = ? WHERE path = ?",
                    (dataset.fingerprint, dataset.path),
                )
                return row[0]
            row = connection.execute(
                "SELECT key FROM datasets WHERE fingerprint = ?", (dataset.fingerprint,)
            ).fetchone()
            first = connection.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 0
            key = row[0] if row is not None else dataset.fingerprint
            connection.execute(
                "INSERT INTO datasets VALUES (?, ?, ?)", (dataset.path, key, dataset.fingerprint)
            )
            if first:
                for table in PER_DATASET:
                    connection.execute(f"UPDATE {table} SET dataset = ? WHERE dataset = ''", (key,))
            return key

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    # -- writing ----------------------------------------------------------------------------
    def add_annotator(self, name: str, kind: str = "person") -> None:
        self.connection.execute(
            "INSERT OR IGNORE INTO annotators (name, kind, created) VALUES (?, ?, ?)",
            (name, kind, time.time()),
        )

    def decide(
        self,
        stage: str,
        item: str,
        annotator: str,
        keep: bool,
        checklist: dict[str, bool] | None = None,
    ) -> None:
        """Record (or change) one annotator's decision on one item."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got '{stage}'")
        # a web client's "false" is text, and text is true to Python: only booleans are taken
        if not isinstance(keep, bool):
            raise ValueError(f"keep must be true or false, got {keep!r}")
        if checklist is not None:
            if not isinstance(checklist, dict) or not all(
                isinstance(v, bool) for v in checklist.values()
            ):
                raise ValueError(f"checklist must map items to true or false, got {checklist!r}")
            unknown = ", ".join(sorted(set(checklist) - set(CHECKLIST)))
            if unknown:
                raise ValueError(
                    f"unknown checklist items: {unknown} (known: {', '.join(CHECKLIST)})"
                )
        self.connection.execute(DECISION, self._decision(stage, item, annotator, keep, checklist))

    def decide_many(
        self, stage: str, annotator: str, decisions: Iterable[tuple[str, bool, Any]]
    ) -> None:
        """Many decisions in one transaction (simulated annotators, imports)."""
        with self.transaction() as connection:
            connection.executemany(
                DECISION,
                [self._decision(stage, item, annotator, k, c) for item, k, c in decisions],
            )

    def _decision(
        self, stage: str, item: str, annotator: str, keep: bool, checklist: dict | None
    ) -> tuple:
        checks = json.dumps(checklist) if checklist else None
        return (self.dataset, stage, item, annotator, int(keep), checks, time.time())

    def undo(self, stage: str, item: str, annotator: str) -> None:
        self.connection.execute(
            "DELETE FROM decisions WHERE dataset = ? AND stage = ? AND item = ? AND annotator = ?",
            (self.dataset, stage, item, annotator),
        )

    def write_caption(self, item: str, annotator: str, text: str) -> None:
        if not text.strip():
            raise ValueError(f"the caption of '{item}' is empty")
        # the exported set's reader drops longer captions as spam: refused here, not lost there
        if len(text.strip()) > MAX_CAPTION_CHARS:
            raise ValueError(
                f"the caption of '{item}' has {len(text.strip())} characters; at most "
                f"{MAX_CAPTION_CHARS}"
            )
        self.connection.execute(
            "INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?)",
            (self.dataset, item, annotator, text.strip(), time.time()),
        )

    def add_comparison(
        self,
        comparison_id: str,
        prompt: str,
        image_a: str,
        image_b: str,
        model_a: str,
        model_b: str,
        tags: list[str] | None = None,
    ) -> None:
        self.connection.execute(
            "INSERT OR IGNORE INTO comparisons VALUES (?, ?, ?, ?, ?, ?, ?)",
            (comparison_id, prompt, image_a, image_b, model_a, model_b, json.dumps(tags or [])),
        )

    def vote(
        self, comparison: str, protocol: str, annotator: str, shown_left: str, choice: str
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got '{protocol}'")
        if choice not in PROTOCOLS[protocol]:
            allowed = ", ".join(PROTOCOLS[protocol])
            raise ValueError(f"a {protocol} vote is one of {allowed}, got '{choice}'")
        self.connection.execute(
            "INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?, ?, ?)",
            (comparison, protocol, annotator, shown_left, choice, time.time()),
        )

    def issue_tokens(self, names: list[str]) -> dict[str, str]:
        """An access token per annotator, made once and kept: a restarted server prints the
        same ones."""
        import secrets

        with self.transaction() as connection:
            for name in names:
                connection.execute(
                    "INSERT OR IGNORE INTO annotators (name, kind, created) VALUES (?, ?, ?)",
                    (name, "person", time.time()),
                )
                connection.execute(
                    "INSERT OR IGNORE INTO tokens VALUES (?, ?)", (secrets.token_urlsafe(18), name)
                )
        rows = self.connection.execute("SELECT annotator, token FROM tokens").fetchall()
        return {name: token for name, token in rows if name in names}

    # -- reading ----------------------------------------------------------------------------
    def annotator_for(self, token: str) -> str | None:
        row = self.connection.execute(
            "SELECT annotator FROM tokens WHERE token = ?", (token,)
        ).fetchone()
        return row[0] if row else None

    def decisions_of(self, stage: str, annotator: str) -> dict[str, dict[str, Any]]:
        rows = self.connection.execute(
            "SELECT item, keep, checklist FROM decisions "
            "WHERE dataset = ? AND stage = ? AND annotator = ?",
            (self.dataset, stage, annotator),
        )
        return {
            item: {"keep": bool(keep), "checklist": json.loads(c) if c else None}
            for item, keep, c in rows
        }

    def progress(self, stage: str) -> dict[str, int]:
        """Decisions per annotator at ``stage``."""
        rows = self.connection.execute(
            "SELECT annotator, COUNT(*) FROM decisions WHERE dataset = ? AND stage = ? "
            "GROUP BY annotator",
            (self.dataset, stage),
        )
        return dict(rows.fetchall())

    def agreement(self, stage: str) -> dict[str, float | int | None]:
        """How often annotators who saw the same item agreed, and Fleiss' kappa (agreement
        beyond what their keep rates give by chance), over items with two or more decisions."""
        shared = [
            [keep for _, keep in decisions]
            for decisions in self.decided(stage).values()
            if len(decisions) >= 2
        ]
        if not shared:
            return {"items": 0, "pairwise": None, "kappa": None}
        agreeing = total = 0
        for keeps in shared:
            kept, n = sum(keeps), len(keeps)
            agreeing += kept * (kept - 1) + (n - kept) * (n - kept - 1)
            total += n * (n - 1)
        observed = agreeing / total
        rate = sum(sum(k) for k in shared) / sum(len(k) for k in shared)
        expected = rate**2 + (1 - rate) ** 2
        kappa = None if expected == 1 else (observed - expected) / (1 - expected)
        return {
            "items": len(shared),
            "pairwise": round(observed, 4),
            "kappa": None if kappa is None else round(kappa, 4),
        }

    def kept(self, stage: str, policy: str = "any") -> set[str]:
        """Items kept at ``stage``: by ``any`` annotator (recall) or by a ``majority``."""
        rows = self.connection.execute(
            "SELECT item, SUM(keep), COUNT(*) FROM decisions WHERE dataset = ? AND stage = ? "
            "GROUP BY item",
            (self.dataset, stage),
        ).fetchall()
        if policy == "any":
            return {item for item, kept, _ in rows if kept > 0}
        if policy == "majority":
            return {item for item, kept, total in rows if 2 * kept > total}
        raise ValueError(f"policy must be 'any' or 'majority', got '{policy}'")

    def decided(self, stage: str) -> dict[str, list[tuple[str, bool]]]:
        rows = self.connection.execute(
            "SELECT item, annotator, keep FROM decisions WHERE dataset = ? AND stage = ? "
            "ORDER BY item",
            (self.dataset, stage),
        )
        decided: dict[str, list[tuple[str, bool]]] = {}
        for item, annotator, keep in rows:
            decided.setdefault(item, []).append((annotator, bool(keep)))
        return decided

    def captions(self) -> dict[str, str]:
        """The newest caption written for each item."""
        rows = self.connection.execute(
            "SELECT item, text FROM captions WHERE dataset = ? ORDER BY created", (self.dataset,)
        ).fetchall()
        return dict(rows)

    def votes(self, protocol: str | None = None) -> list[Vote]:
        query = "SELECT comparison, protocol, annotator, shown_left, choice FROM votes"
        rows = (
            self.connection.execute(query + " WHERE protocol = ?", (protocol,))
            if protocol
            else self.connection.execute(query)
        )
        return [Vote(*row) for row in rows]

    def comparisons(self) -> dict[str, dict[str, Any]]:
        rows = self.connection.execute(
            "SELECT id, prompt, image_a, image_b, model_a, model_b, tags FROM comparisons"
        )
        return {
            row[0]: {
                "prompt": row[1],
                "image_a": row[2],
                "image_b": row[3],
                "model_a": row[4],
                "model_b": row[5],
                "tags": json.loads(row[6]),
            }
            for row in rows
        }
