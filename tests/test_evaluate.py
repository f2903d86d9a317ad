"""The paper's side-by-side arithmetic on known votes, and prompt sets."""

import json
import re

import pytest

from emu_cli.evaluate.prompts import load_prompts
from emu_cli.evaluate.winrate import outcomes, pair_outcome, win_rate
from emu_cli.human.store import AnnotationStore


@pytest.mark.parametrize(
    ("choices", "expected"),
    [
        (["a", "a", "a", "b", "tie"], "a"),
        (["b", "b", "tie", "tie", "tie"], "tie"),
        (["a", "a", "b", "b", "tie"], "tie"),  # a split panel prefers neither
        (["a", "a", "tie", "tie", "b"], "tie"),
        (["b", "both", "neither"], "tie"),  # faithfulness: both and neither are ties
        (["b", "b", "neither"], "b"),
    ],
)
def test_each_pair_goes_to_the_plurality(choices, expected):
    assert pair_outcome(choices) == expected


def test_win_rates_from_stored_votes(tmp_path):
    store = AnnotationStore(tmp_path / "votes.sqlite")
    for name in ("p1", "p2", "p3"):
        store.add_annotator(name)
    panels = {"c1": ["a", "a", "b"], "c2": ["a", "a", "a"], "c3": ["tie", "b", "b"], "c4": ["a"]}
    for pair, choices in panels.items():
        store.add_comparison(pair, "prompt", "a.png", "b.png", "A", "B")
        for annotator, choice in zip(("p1", "p2", "p3"), choices, strict=False):
            store.vote(pair, "appeal", annotator, "a", choice)
    store.add_comparison("c5", "prompt", "a.png", "b.png", "A", "B")
    store.vote("c5", "faithfulness", "p1", "b", "both")
    decided = outcomes(store.votes(), "appeal")
    assert decided == {"c1": "a", "c2": "a", "c3": "b", "c4": "a"}
    assert outcomes(store.votes(), "faithfulness") == {"c5": "tie"}
    rate = win_rate(list(decided.values()))
    assert (rate.a, rate.b, rate.tie, rate.pairs) == (0.75, 0.25, 0.0, 4)


def test_bootstrap_interval_over_prompts():
    results = ["a"] * 70 + ["b"] * 20 + ["tie"] * 10
    rate = win_rate(results, resamples=2000, seed=1)
    assert (rate.a, rate.b, rate.tie) == (0.7, 0.2, 0.1)
    low, high = rate.interval["a"]
    # binomial standard error sqrt(0.7 * 0.3 / 100) = 0.046: the 95% interval is about +-0.09
    assert 0.58 < low < 0.63 and 0.77 < high < 0.82
    wider = win_rate(results[::10] * 1, resamples=2000, seed=1)  # 10 pairs, same shares
    assert wider.interval["a"][1] - wider.interval["a"][0] > high - low
    unanimous = win_rate(["a"] * 30)
    assert unanimous.interval["a"] == (1.0, 1.0)
    # Pairs of one prompt move together: two prompts, each all-a or all-b.
    grouped = win_rate(["a"] * 5 + ["b"] * 5, ["p"] * 5 + ["q"] * 5, resamples=2000)
    assert grouped.interval["a"] == (0.0, 1.0)
    empty = win_rate([])
    assert empty.pairs == 0
    with pytest.raises(ValueError, match="a, b or tie"):
        win_rate(["both"])


def test_prompt_sets(tmp_path):
    world = load_prompts("builtin:world")
    subjects = {p.tags[1] for p in world}
    assert len(subjects) == 8
    unseen = {p.tags[1] for p in world if "unseen" in p.tags}
    assert unseen == {"diamond", "ring"}
    assert all(p.tags[1] in p.text for p in world)
    # the generality split is read on as many pairs as the seen one
    assert sum("unseen" in p.tags for p in world) == sum("seen" in p.tags for p in world) == 72
    assert load_prompts("builtin:world") == world, "a built-in set is the same every time"
    validation = load_prompts("builtin:validation")
    assert validation and all("seen" in p.tags for p in validation)

    plain = tmp_path / "prompts.txt"
    plain.write_text("a red star\n\n  a blue ring  \n")
    assert [p.text for p in load_prompts(plain)] == ["a red star", "a blue ring"]
    tagged = tmp_path / "prompts.jsonl"
    tagged.write_text(json.dumps({"prompt": "a red star", "tags": ["parti"]}) + "\n")
    assert load_prompts(tagged)[0].tags == ("parti",)
    for line, message in [
        ('{"text": "no prompt key"}', "prompts.jsonl:2: expected a JSON object with a 'prompt'"),
        ('["a red star"]', "prompts.jsonl:2: expected a JSON object with a 'prompt'"),
        ("a red star", "prompts.jsonl:2: not JSON"),
        ('{"prompt": "a red star", "tags": "parti"}', "prompts.jsonl:2: 'tags' must be a list"),
    ]:
        tagged.write_text(json.dumps({"prompt": "fine"}) + "\n" + line + "\n")
        with pytest.raises(ValueError, match=re.escape(message)):
            load_prompts(tagged)
    tagged.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(ValueError, match="prompts.jsonl' is not UTF-8 text"):
        load_prompts(tagged)
    with pytest.raises(ValueError, match="no built-in prompt set 'nope'"):
        load_prompts("builtin:nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")


def _evaluate_command(model_a, model_b, tmp_path, out: str, *extra: object) -> tuple:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red star on a sunset background\na blue ring on a sky background\n")
    return ("evaluate", "--a", model_a, "--b", model_b, "--prompts", prompts,
            "--out", tmp_path / out, "--sampling-steps", 2, "--device", "cpu", "--resamples", 50,
            *extra)  # fmt: skip


def test_new_images_are_never_mixed_with_old_votes(tiny_latent, browser, tmp_path):
    import shutil

    from conftest import emu

    model = shutil.copytree(tiny_latent, tmp_path / "model")
    run = _evaluate_command(model, tiny_latent, tmp_path, "eval")
    first = json.loads(emu(*run, "--json").stdout)
    assert first["pairs"] == 2 and first["votes"] == 2 * 8
    assert json.loads(emu(*run, "--json").stdout) == first, "a rerun reuses images and votes"
    _read_the_report_in_a_browser(browser, tmp_path / "eval")

    provenance = json.loads((model / "emu.json").read_text())
    provenance["saved_at"] = "2030-01-01T00:00:00Z"  # the checkpoint was saved again
    (model / "emu.json").write_text(json.dumps(provenance))
    again = emu(*run, check=False)
    assert again.returncode == 1 and "holds votes on images of another checkpoint" in again.stderr


def _read_the_report_in_a_browser(browser, evaluation) -> None:
    """The report as a person sees it: the models by name, each pair's verdict and votes,
    large thumbnails, a table per prompt tag."""
    from conftest import ARTIFACTS

    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto((evaluation / "report.html").as_uri())
    page.wait_for_load_state("load")
    assert page.inner_text("h1") == "Side-by-side evaluation: model against latent"
    figures = page.locator("figure")
    assert figures.count() == 2
    caption = figures.first.inner_text()
    assert "visual appeal:" in caption and "text faithfulness:" in caption
    # five appeal and three faithfulness votes, each pair's count adding up
    counts = [int(n) for n in re.findall(r"(?:model|latent|tie|both|neither) (\d)", caption)]
    assert sum(counts) == 8, caption
    assert figures.first.locator("img").first.bounding_box()["width"] >= 256
    assert page.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")
    headers = page.locator("h2").all_inner_texts()
    assert (
        "Visual appeal, by prompt tag" in headers and "Text faithfulness, by prompt tag" in headers
    )
    assert "model preferred" in page.locator("table").first.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "evaluate-report.png"), full_page=True)
    page.close()


def test_each_side_samples_at_its_backends_guidance_or_its_own(tiny_latent, tmp_path):
    from conftest import emu
    from emu_cli.plugin.registry import get_backend

    def evaluate(out: str, *extra: object) -> dict:
        command = _evaluate_command(tiny_latent, tiny_latent, tmp_path, out, *extra, "--json")
        return json.loads(emu(*command).stdout)

    default = get_backend("latent").default_guidance
    assert evaluate("shared")["guidance"] == {"a": default, "b": default}
    assert evaluate("own", "--b-guidance", 1.5)["guidance"] == {"a": default, "b": 1.5}

    def image(run: str, side: str) -> bytes:
        return (tmp_path / run / "images" / side / "0000-00.png").read_bytes()

    assert image("own", "a") == image("shared", "a"), "the other side keeps its images"
    assert image("own", "b") != image("shared", "b")

    bad = emu(*_evaluate_command(tiny_latent, tiny_latent, tmp_path, "bad", "--a-guidance", "nan"),
              check=False)  # fmt: skip
    assert bad.returncode == 1
    assert "guidance scale must be a finite number >= 0, got nan" in bad.stderr
