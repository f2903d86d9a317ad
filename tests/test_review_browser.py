"""The review app in a real browser: Debian's chromium, driven by Playwright, with keys and
clicks.

One annotator goes through every stage as a person would; the database and the export must
reflect each key they pressed and each button they clicked, and the page's counts must follow.
A screenshot of each stage and of the guide is left in test-artifacts/ (docs/images/ holds
copies).
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from review_client import serve

from conftest import ARTIFACTS, emu
from emu_cli.data import index_dataset
from emu_cli.human.store import AnnotationStore, Dataset


def annotate(browser, port: int, token: str, stage: str):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"http://127.0.0.1:{port}/?token={token}")
    page.wait_for_selector("#main img")
    return page


def wait_for_status(page, expected: str) -> None:
    """Wait until the page says the server confirmed ``expected``."""
    page.wait_for_function(
        "expected => document.getElementById('status').textContent === expected", arg=expected
    )


def shoot(page, stage: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"review-{stage}.png"))
    page.close()


@pytest.mark.slow
def test_an_annotator_goes_through_every_stage_with_the_keyboard(browser, world, tmp_path):
    pool = shutil.copytree(world, tmp_path / "pool")
    keys = [s.key for s in index_dataset(pool).samples]
    captions = {s.key: s.caption for s in index_dataset(pool).samples}
    store_file = tmp_path / "annotations.sqlite"

    with serve(pool, "generalist", 2) as (port, tokens, _):
        page = annotate(browser, port, tokens["annotator-1"], "generalist")
        assert page.locator(".cell").count() == 24
        for key in "aarau":  # as fast as keys go: each acts on the item under the cursor
            page.keyboard.press(key)
        wait_for_status(page, f"undid {keys[3]}")
        assert page.locator(".cell.keep").count() == 2 and page.locator(".cell.drop").count() == 1
        # a decision is written on the image, not only coloured
        assert page.locator(".cell.keep .badge").all_inner_texts() == ["KEPT", "KEPT"]
        assert page.locator(".cell.drop .badge").inner_text() == "REJECTED"
        assert page.inner_text("#counts") == f"3 decided · {len(keys) - 3} left"
        assert page.locator(".cell .cap").first.inner_text() == captions[keys[0]]
        page.locator(".cell").nth(5).click()  # the mouse does what the keys do
        page.click("#reject")
        wait_for_status(page, f"rejected {keys[5]}")
        assert page.inner_text("#counts") == f"4 decided · {len(keys) - 4} left"
        shoot(page, "generalist")
    store = AnnotationStore(store_file, Dataset.of(index_dataset(pool)))
    assert store.decisions_of("generalist", "annotator-1") == {
        keys[0]: {"keep": True, "checklist": None},
        keys[1]: {"keep": True, "checklist": None},
        keys[2]: {"keep": False, "checklist": None},
        keys[5]: {"keep": False, "checklist": None},
    }

    with serve(pool, "specialist", 1) as (port, tokens, _):
        page = annotate(browser, port, tokens["annotator-1"], "specialist")
        assert "image 1 of 2" in page.inner_text("#where"), "only what generalists kept"
        guideline = page.locator(".rule").first.inner_text()
        assert guideline.startswith("passes: ") and "; fails: " in guideline
        assert "Keep an image only when it passes every one" in page.inner_text("main")
        page.keyboard.press("1")  # composition
        page.keyboard.press("2")  # lighting
        page.keyboard.press("k")
        page.click("#drop")
        wait_for_status(page, f"rejected {keys[1]}")
        assert page.inner_text(".verdict") == "REJECTED"
        assert page.inner_text("#counts") == "2 decided · 0 left"
        shoot(page, "specialist")
    decisions = store.decisions_of("specialist", "annotator-1")
    assert decisions[keys[0]]["keep"] and not decisions[keys[1]]["keep"]
    checklist = decisions[keys[0]]["checklist"]
    assert checklist["composition"] and checklist["lighting"] and not checklist["subjective"]

    with serve(pool, "caption", 1) as (port, tokens, _):
        page = annotate(browser, port, tokens["annotator-1"], "caption")
        page.fill("#text", "a hand-written caption of a shape")
        page.keyboard.press("Control+Enter")
        wait_for_status(page, f"saved {keys[0]}")
        assert page.inner_text("#counts") == "1 decided · 0 left"
        guide = page.get_attribute("a[target=_blank]", "href")
        page.goto(f"http://127.0.0.1:{port}{guide}")
        text = page.inner_text("main")
        assert "The guidelines" in text and "blown-out highlights" in text
        assert "caption (this stage)" in text
        page.screenshot(path=str(ARTIFACTS / "review-guide.png"))
        page.go_back()
        page.wait_for_selector("#main img")
        shoot(page, "caption")
    assert store.captions() == {keys[0]: "a hand-written caption of a shape"}
    out = tmp_path / "curated"
    emu("review", pool, "--stage", "caption", "--export", out)
    records = [json.loads(line) for line in (out / "metadata.jsonl").open()]
    assert [(r["source_key"], r["text"]) for r in records] == [
        (keys[0], "a hand-written caption of a shape")
    ]

    evaluation = tmp_path / "evaluation"
    (evaluation / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    votes = AnnotationStore(evaluation / "annotations.sqlite")
    for i in range(3):
        for side in ("a", "b"):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(evaluation / "images" / f"{i}-{side}.png")
        votes.add_comparison(f"pair-{i}", "a red star on a sunset background",
                             f"images/{i}-a.png", f"images/{i}-b.png", "QT", "pre")  # fmt: skip
    with serve(evaluation, "compare", 1) as (port, tokens, _):
        page = annotate(browser, port, tokens["annotator-1"], "compare")
        assert not page.locator(".caption").count(), "appeal is judged with the caption hidden"
        left = page.get_attribute("#left", "src")
        page.keyboard.press("1")
        assert page.inner_text(".caption") == "a red star on a sunset background"
        page.keyboard.press("4")
        assert "pair 2 of 3" in page.inner_text("#where")
        page.keyboard.press("3")
        wait_for_status(page, "appeal: tie pair-1")
        page.click("button[data-choice='2']")  # faithfulness of pair-1: the right-hand image
        page.click("#left")  # appeal of pair-2, by clicking the picture
        wait_for_status(page, "appeal: left pair-2")
        assert page.inner_text("#counts") == "2 decided · 1 left"
        shoot(page, "compare")
    cast = {(v.comparison, v.protocol): v for v in votes.votes()}
    appeal = cast[("pair-0", "appeal")]
    assert f"side={appeal.shown_left}" in left and appeal.choice == appeal.shown_left
    assert cast[("pair-0", "faithfulness")].choice == "neither"
    assert cast[("pair-1", "appeal")].choice == "tie"
    right = cast[("pair-1", "faithfulness")]
    assert right.choice == ("b" if right.shown_left == "a" else "a")
    assert cast[("pair-2", "appeal")].choice == cast[("pair-2", "appeal")].shown_left
    for stage in ("generalist", "specialist", "caption", "compare", "guide"):
        assert (ARTIFACTS / f"review-{stage}.png").stat().st_size > 5000
