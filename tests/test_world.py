"""The built-in world: generator, junk, judges and simulated annotators, against the truth."""

import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image

from emu_cli.data import index_dataset
from emu_cli.human.store import AnnotationStore
from emu_cli.world.judges import WorldJudges
from emu_cli.world.synth import JUNK_RATES, NEEDLE_APPEAL, draw_sample, plan_sample, synthesize


@pytest.fixture(scope="module")
def judges() -> WorldJudges:
    return WorldJudges.load()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return synthesize(4000, tmp_path_factory.mktemp("pool"), seed=3, size=32, workers=2)


def _rows(folder):
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_same_seed_same_pool_whatever_the_process_count(tmp_path):
    one = synthesize(150, tmp_path / "one", seed=4, size=32, workers=1, report=False)
    two = synthesize(150, tmp_path / "two", seed=4, size=32, workers=2, report=False)
    assert (one / "metadata.jsonl").read_text() == (two / "metadata.jsonl").read_text()
    for path in sorted((one / "images").iterdir()):
        assert path.read_bytes() == (two / "images" / path.name).read_bytes()
    other = synthesize(20, tmp_path / "other", seed=5, size=32, workers=1, report=False)
    assert (other / "images/00000001.jpg").read_bytes() != (
        one / "images/00000001.jpg"
    ).read_bytes()

    # written again, a pool is replaced as a whole (no image left over from the larger one);
    # a folder of other files is not written into
    again = synthesize(20, one, seed=4, size=32, workers=1, report=False)
    assert len(list((again / "images").iterdir())) == 20 == len(_rows(again))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="'.*notes' exists and is not a folder emu wrote"):
        synthesize(20, tmp_path / "notes", seed=4, size=32, workers=1)
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_both_formats_load_through_the_core_reader_and_datasets(tmp_path):
    folder = synthesize(120, tmp_path / "folder", seed=1, size=32, workers=1)
    shards = synthesize(120, tmp_path / "shards", seed=1, size=32, format="webdataset", workers=1)
    assert [s.caption for s in index_dataset(folder).samples] == [
        s.caption for s in index_dataset(shards).samples
    ]
    import datasets

    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert len(loaded) == 120
    first = _rows(folder)[0]
    assert loaded[0]["text"] == first["text"] and loaded[0]["appeal"] == first["appeal"]
    assert loaded[0]["image"].size == (first["width"], first["height"])
    assert (folder / "contact_sheet.png").is_file() and (folder / "stats.md").is_file()


def test_a_clean_set_shows_every_caption_plainly(judges, pool, tmp_path):
    from click.testing import CliRunner

    from emu_cli.cli import cli

    out = tmp_path / "clean"
    result = CliRunner().invoke(
        cli,
        ["data", "synth", "--num-images", "200", "--size", "32", "--seed", "3", "--clean"]
        + ["--workers", "1", "--out", str(out)],
    )
    assert result.exit_code == 0 and "wrote 200 clean samples" in result.output, result.output
    rows = _rows(out)
    assert not any(r["junk"] for r in rows)
    attributes = ("subject", "color", "background")
    assert all(r["caption_attributes"] == {a: r[a] for a in attributes} for r in rows)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["clean"] and set(stats["junk_rates_documented"].values()) == {0.0}

    def named(folder, rows) -> dict[str, float]:
        judged = judges.judge([Image.open(folder / r["file_name"]) for r in rows]).attributes
        return {
            a: np.mean([j == r[a] for j, r in zip(judged[a], rows, strict=True)])
            for a in attributes
        }

    clean = named(out, rows)
    assert min(clean.values()) >= 0.95, clean
    # the pool shows its subjects small, blurred and noisy
    plain = [r for r in _rows(pool) if not r["junk"]][:200]
    assert named(pool, plain)["subject"] < 0.6


def test_junk_and_needle_rates_match_their_documentation(pool):
    rows = _rows(pool)
    stats = json.loads((pool / "stats.json").read_text())
    for junk, rate in JUNK_RATES.items():
        measured = sum(junk in r["junk"] for r in rows) / len(rows)
        # duplicates copy their source's junk too, so their rates run a little above
        assert abs(measured - rate) < 0.02, f"{junk}: {measured:.3f} vs documented {rate}"
        assert stats["junk_rates"][junk] == round(measured, 4)
    needles = [r for r in rows if r["needle"]]
    assert 0.008 <= len(needles) / len(rows) <= 0.025
    assert all(r["appeal"] >= NEEDLE_APPEAL and not r["junk"] for r in needles)


def test_junk_is_what_its_flag_says(pool):
    rows = {r["file_name"]: r for r in _rows(pool)}
    for name, row in rows.items():
        image_bytes = (pool / name).read_bytes()
        if "duplicate" in row["junk"]:
            source = rows[f"images/{row['duplicate_of']}.jpg"]
            assert image_bytes == (pool / source["file_name"]).read_bytes()
        if "near_duplicate" in row["junk"]:
            assert image_bytes != (pool / f"images/{row['duplicate_of']}.jpg").read_bytes()
        if "wrong_caption" in row["junk"]:
            said = row["caption_attributes"]
            assert (said["subject"], said["color"]) != (row["subject"], row["color"])
            assert said["subject"] in row["text"] and said["color"] in row["text"]
        if "tiny" in row["junk"]:
            assert max(row["width"], row["height"]) < 32
        if "extreme_aspect" in row["junk"]:
            assert max(row["width"], row["height"]) / min(row["width"], row["height"]) >= 2.8
        if not row["junk"]:
            assert row["caption_attributes"] == {
                k: row[k] for k in ("subject", "color", "background")
            }


def test_overlaid_text_changes_the_pixels_and_uses_a_real_font():
    number = next(n for n in range(400) if plan_sample(0, n, 128).junk == ("overlaid_text",))
    with_text = np.asarray(Image.open(io.BytesIO(draw_sample(0, number, 128).data)), dtype=float)
    from emu_cli.world.render import font

    assert font(20).getname()[0] == "DejaVu Sans"
    plan = plan_sample(0, number, 128)
    from emu_cli.world.render import render

    plain = np.asarray(
        render(
            plan.subject,
            plan.color,
            plan.background,
            128,
            plan.factors,
            np.random.default_rng([0, number, 2]),
        ),
        dtype=float,
    )
    changed = np.abs(with_text - plain).max(axis=2) > 60
    assert 0.01 < changed.mean() < 0.5, "a legible band of text, not noise and not a blank"


# The [world] issue asks for 0.8 at both sizes. Measured with the shipped judges: 0.812 at 32 px,
# 0.833 at 64 px (docs/world.md).
APPEAL_SPEARMAN = {32: 0.8, 64: 0.8}


@pytest.mark.parametrize("size", [32, 64])
def test_appeal_judge_ranks_held_out_samples_like_the_truth(judges, size):
    from emu_cli.world.validation import validate_appeal

    assert validate_appeal(judges, size, count=2000) >= APPEAL_SPEARMAN[size]


@pytest.mark.parametrize("size", [32, 64])
def test_faithfulness_judge_recognises_every_attribute(judges, size):
    from emu_cli.world.validation import validate_faithfulness

    accuracy = validate_faithfulness(judges, size, count=600)
    for attribute in ("subject", "color", "background"):
        assert accuracy[attribute] >= 0.95, accuracy


def test_faithfulness_judge_catches_a_caption_about_something_else(judges):
    from emu_cli.world.validation import clean_renders

    images, truths = clean_renders(48, 64)
    right = [f"a {t['color']} {t['subject']} on a {t['background']} background" for t in truths]
    wrong = [f"a {'blue' if t['color'] != 'blue' else 'red'} {t['subject']}" for t in truths]
    assert judges.faithfulness(images, right)["all"].mean() >= 0.9
    assert judges.faithfulness(images, wrong)["color"].mean() <= 0.1


def test_judge_command_says_where_an_image_differs_from_the_caption(tmp_path):
    from click.testing import CliRunner

    from emu_cli.cli import cli
    from emu_cli.world.validation import clean_renders

    images, truths = clean_renders(4, 64)
    paths = []
    for k, image in enumerate(images):
        paths.append(str(tmp_path / f"{k}.png"))
        image.save(paths[-1])
    truth = truths[0]
    other = "blue" if truth["color"] != "blue" else "red"
    caption = f"a {other} {truth['subject']} on a {truth['background']} background"

    def judge(*args: str):
        return CliRunner().invoke(cli, ["data", "judge", *args])

    text = judge(paths[0], "--caption", caption).output
    assert f"shows a {truth['color']} {truth['subject']} on {truth['background']}" in text
    assert text.strip().endswith("not the caption's color"), text
    right = caption.replace(other, truth["color"])
    assert judge(paths[0], "--caption", right).output.strip().endswith("as captioned")
    rows = json.loads(judge(*paths, "--json").output)
    assert [(r["subject"], r["color"]) for r in rows] == [
        (t["subject"], t["color"]) for t in truths
    ]

    (tmp_path / "notes.png").write_text("not an image")
    result = judge(paths[0], str(tmp_path / "notes.png"))
    assert result.exit_code == 2 and "notes.png' is not an image" in result.output
    result = judge(paths[0], "--caption", "a unicorn")
    assert result.exit_code == 2 and "names no subject, color or background" in result.output


def test_judge_training_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from emu_cli.world.judges import train_judges

    for name in ("a", "b"):
        train_judges(tmp_path / f"{name}.safetensors", samples=256, epochs=1, batch_size=64)
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert json.loads((tmp_path / "a.json").read_text())["samples"] == 256


def test_simulated_filtering_cuts_ten_then_ten_and_raises_appeal(judges, tmp_path):
    pool = synthesize(2000, tmp_path / "pool", seed=8, size=64, workers=2, report=False)
    rows = [r for r in _rows(pool) if not r["junk"]]  # what the automatic filters pass on
    images = {r["file_name"]: Image.open(pool / r["file_name"]).convert("RGB") for r in rows}
    truth = {r["file_name"]: r["appeal"] for r in rows}
    store = AnnotationStore(tmp_path / "annotations.sqlite")
    from emu_cli.world.annotators import simulate_filtering

    first = simulate_filtering(store, "generalist", images, judges, seed=1)
    second = simulate_filtering(
        store, "specialist", {k: images[k] for k in first.kept}, judges, seed=1
    )
    assert 0.07 <= len(first.kept) / len(images) <= 0.13
    assert 0.03 <= len(second.kept) / len(first.kept) <= 0.13
    mean = lambda keys: float(np.mean([truth[k] for k in keys]))  # noqa: E731
    assert mean(first.kept) > mean(images) + 0.1
    assert mean(second.kept) > mean(first.kept)
    assert store.kept("generalist") == set(first.kept)
    assert store.kept("specialist") == set(second.kept)
    decided = store.decided("specialist")
    assert len(decided) == len(first.kept)
    checklist = store.connection.execute(
        "SELECT checklist FROM decisions WHERE stage = 'specialist' LIMIT 1"
    ).fetchone()[0]
    assert set(json.loads(checklist)) == {
        "composition",
        "lighting",
        "color_contrast",
        "subject_background",
        "subjective",
    }


def test_simulated_votes_follow_the_protocol_and_prefer_the_better_image(judges, tmp_path):
    from emu_cli.world.annotators import Pair, simulate_votes
    from emu_cli.world.factors import clean_factors, sample_factors
    from emu_cli.world.render import render

    store = AnnotationStore(tmp_path / "votes.sqlite")
    pairs = []
    for i in range(30):
        rng = np.random.default_rng(i)
        good = render("star", "red", "sunset", 64, clean_factors(rng), rng)
        dark = dataclasses.replace(sample_factors(rng), exposure=-1.8, noise=0.1)
        poor = render("star", "red", "sunset", 64, dark, rng)
        wrong = render("circle", "blue", "sunset", 64, clean_factors(rng), rng)
        pairs.append(Pair(f"appeal-{i}", "a red star on a sunset background", good, poor))
        pairs.append(Pair(f"faith-{i}", "a red star on a sunset background", good, wrong))
    for pair in pairs:
        store.add_comparison(
            pair.comparison,
            pair.prompt,
            f"{pair.comparison}-a.png",
            f"{pair.comparison}-b.png",
            "good",
            "other",
        )
    simulate_votes(store, pairs, judges, seed=2)
    appeal = [v for v in store.votes("appeal") if v.comparison.startswith("appeal")]
    faith = [v for v in store.votes("faithfulness") if v.comparison.startswith("faith")]
    assert len(appeal) == 30 * 5 and len(faith) == 30 * 3
    assert sum(v.choice == "a" for v in appeal) / len(appeal) >= 0.7
    assert sum(v.choice == "a" for v in faith) / len(faith) >= 0.8
    assert {v.shown_left for v in appeal} == {"a", "b"}  # sides are randomised and recorded
    with pytest.raises(ValueError, match="a faithfulness vote is one of"):
        store.vote("faith-0", "faithfulness", "someone", "a", "tie")
