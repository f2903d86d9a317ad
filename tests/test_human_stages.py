"""Holding concepts out by caption words, and the simulated generalist and specialist stages."""

import json
import sqlite3

import pandas as pd

from conftest import emu
from emu_cli.data import index_dataset


def test_blocked_caption_words_are_rejected_with_the_word_named(world, tmp_path):
    out = tmp_path / "run"
    emu("filter", "--data", world, "--out", out, "--filters", "caption_words",
        "--set", "caption_words.blocked=[Diamond, ring]")  # fmt: skip
    manifest = pd.read_parquet(out / "manifest.parquet")
    named = manifest["caption"].str.contains(r"\b(?:diamond|ring)\b", case=False)
    assert named.any() and (~named).any()
    assert (manifest.loc[named, "reason"] == "caption_words").all()
    assert manifest.loc[named, "detail"].str.match(r"caption names '(diamond|ring)'").all()
    assert manifest.loc[~named, "status"].eq("kept").all(), "'string' must not match 'ring'"
    kept = [json.loads(line)["text"] for line in (out / "kept/metadata.jsonl").open()]
    assert len(kept) == int((~named).sum())


def test_simulated_stages_keep_the_most_appealing_and_record_every_decision(world, tmp_path):
    store = tmp_path / "annotations.sqlite"
    generalist, specialist = tmp_path / "generalist", tmp_path / "specialist"
    printed = emu("data", "simulate-review", "--data", world, "--stage", "generalist",
                  "--keep-rate", 0.3, "--out", generalist, "--store", store).stdout  # fmt: skip
    assert "generalists kept" in printed
    emu("data", "simulate-review", "--data", generalist, "--stage", "specialist",
        "--keep-rate", 0.5, "--out", specialist, "--store", store)  # fmt: skip
    pool, first, second = (index_dataset(p) for p in (world, generalist, specialist))
    assert 0.2 * len(pool) < len(first) < 0.4 * len(pool)
    assert 0 < len(second) <= 0.5 * len(first)

    truth = {
        json.loads(line)["file_name"]: json.loads(line)
        for line in (world / "metadata.jsonl").open()
    }
    records = [json.loads(line) for line in (generalist / "metadata.jsonl").open()]
    kept_appeal = [truth[r["source_key"]]["appeal"] for r in records]
    pool_appeal = [t["appeal"] for t in truth.values()]
    assert sum(kept_appeal) / len(kept_appeal) > sum(pool_appeal) / len(pool_appeal) + 0.05
    assert all(truth[r["source_key"]]["text"] == r["text"] for r in records)

    with sqlite3.connect(store) as connection:
        counts = dict(connection.execute("SELECT stage, COUNT(*) FROM decisions GROUP BY stage"))
        checklists = connection.execute(
            "SELECT checklist FROM decisions WHERE stage = 'specialist'"
        ).fetchall()
    readable = len(index_dataset(world))
    assert counts == {"generalist": readable, "specialist": len(first)}
    assert all(
        set(json.loads(c)) >= {"composition", "lighting", "subjective"} for (c,) in checklists
    )

    # a curated folder is replaced as a whole on a rerun, and only a folder emu wrote: the
    # dataset it is read from, or a folder of other files, is refused before any decision
    def files(folder):
        return sorted((p.relative_to(folder), p.stat().st_size) for p in folder.rglob("*"))

    again = emu("data", "simulate-review", "--data", generalist, "--stage", "specialist",
                "--keep-rate", 0.5, "--out", specialist, "--store", store)  # fmt: skip
    assert len(index_dataset(specialist)) == len(second), again.stdout
    before = files(generalist)
    refused = emu("data", "simulate-review", "--data", generalist, "--stage", "specialist",
                  "--out", generalist, "--store", store, check=False)  # fmt: skip
    assert (
        refused.returncode == 1 and "holds the dataset it would be written from" in refused.stderr
    )
    refused = emu("review", tmp_path, "--stage", "generalist", "--export", tmp_path, check=False)
    assert refused.returncode == 1 and "holds the dataset" in refused.stderr
    # inside it, the export's metadata.jsonl would join the dataset the next time it is read
    inside = generalist / "curated"
    refused = emu("review", generalist, "--stage", "specialist", "--export", inside, check=False)
    assert refused.returncode == 1 and "is inside the dataset it is written from" in refused.stderr
    assert files(generalist) == before
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    refused = emu("review", generalist, "--stage", "specialist", "--export", foreign, check=False)
    assert refused.returncode == 1 and "is not a folder emu wrote" in refused.stderr
    assert (foreign / "todo.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
