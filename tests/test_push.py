"""`emu push` through the real huggingface_hub client, against a Hub on 127.0.0.1."""

import json
import shutil

import pandas as pd
import pytest
from hub_server import READ_TOKEN, WRITE_TOKEN, FakeHub

from conftest import emu
from emu_cli.data import index_dataset


def hub_env(hub: FakeHub, token: str | None = WRITE_TOKEN) -> dict:
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env["HF_TOKEN"] = token or ""
    return env


@pytest.fixture
def checkpoint(tiny_latent, tmp_path):
    return shutil.copytree(tiny_latent, tmp_path / "model")


def test_a_checkpoint_arrives_byte_identical_with_a_card(checkpoint, tmp_path):
    from huggingface_hub import ModelCard

    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    rate = {"a": 0.8, "b": 0.15, "tie": 0.05, "pairs": 96, "interval": {}}
    (evaluation / "results.json").write_text(json.dumps({
        "b": "runs/latent/pre", "annotators": "simulated", "prompts": "builtin:world",
        "protocols": {"appeal": {"all": rate}, "faithfulness": {"all": rate}},
    }))  # fmt: skip
    with FakeHub() as hub:
        printed = emu("push", checkpoint, "--repo", "me/emu-latent", "--base-model", "me/pre",
                      "--card-dataset", "me/curated", "--evaluation", evaluation,
                      "--commit-message", "first", env=hub_env(hub)).stdout  # fmt: skip
        assert "pushed" in printed and "/me/emu-latent/commit/" in printed
        files = hub.files("me/emu-latent")
        repo = hub.repos[("model", "me/emu-latent")]
    assert len(repo.commits) == 1 and repo.commits[0]["summary"] == "first", "one commit"
    local = {
        str(p.relative_to(checkpoint)): p.read_bytes()
        for p in checkpoint.rglob("*")
        if p.is_file() and p.relative_to(checkpoint).parts[0] != "stages"
    }
    local["emu.json"] = files["emu.json"]  # the push is recorded locally only after it
    assert {k: v for k, v in files.items() if k not in ("README.md", "samples.png")} == local
    assert not any(name.startswith("stages/") for name in files), "training state stays home"
    assert files["samples.png"].startswith(b"\x89PNG")

    card_file = tmp_path / "README.md"
    card_file.write_bytes(files["README.md"])
    card = ModelCard.load(card_file)
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "text-to-image"
    assert {"emu", "emu-latent"} <= set(card.data.tags)
    assert card.data.base_model == "me/pre" and card.data.datasets == ["me/curated"]
    assert 'StableDiffusionPipeline.from_pretrained("me/emu-latent")' in card.text
    assert "| appeal | all | 80.0% | 15.0% | 5.0% | 96 |" in card.text
    assert "![samples](samples.png)" in card.text
    pushes = json.loads((checkpoint / "emu.json").read_text())["pushes"]
    assert pushes[0]["repo"] == "me/emu-latent" and "/commit/" in pushes[0]["commit"]


def test_a_curated_set_becomes_a_dataset_repo_that_datasets_reads(world, tmp_path):
    from datasets import load_dataset

    rate = ("data", "rate", "--num-images", 5, "--out")
    emu(*rate, tmp_path / "local.jsonl", "--data", world)
    with FakeHub() as hub:
        emu("push", world, "--dataset", "--repo", "me/curated", "--private", "--revision",
            "v1", env=hub_env(hub))  # fmt: skip
        repo = hub.repos[("dataset", "me/curated")]
        files = hub.files("me/curated", "dataset", "v1")
        # Any command's --data names it by its repo too: downloaded with the reader's token.
        reader = hub_env(hub, READ_TOKEN) | {"HF_HOME": str(tmp_path / "hf-home")}
        emu(*rate, tmp_path / "hub.jsonl", "--data", "me/curated@v1", env=reader)
        missing = emu(*rate, tmp_path / "x.jsonl", "--data", "me/nothing", env=reader,
                      check=False)  # fmt: skip
    assert (tmp_path / "hub.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    assert missing.returncode == 1
    assert "dataset 'me/nothing' is not a folder here, and the Hub at" in missing.stderr
    assert repo.private and repo.commits[0]["revision"] == "v1"
    for name, data in files.items():
        if name != "README.md":
            assert data == (world / name).read_bytes(), name
    downloaded = tmp_path / "downloaded"
    for name, data in files.items():
        (downloaded / name).parent.mkdir(parents=True, exist_ok=True)
        (downloaded / name).write_bytes(data)
    dataset = load_dataset(str(downloaded), split="train")
    assert len(dataset) == len(index_dataset(world)) and "text" in dataset.column_names
    assert "task_categories:\n- text-to-image" in files["README.md"].decode()


def test_a_trained_clip_and_its_head_go_up_and_emu_filter_loads_them_by_hub_id(world, tmp_path):
    """The offline CLIP is in open_clip's Hub layout: pushed with its aesthetic head, both load
    with `hf-hub:` (the CLIP through open_clip's own download code) and score exactly as the
    local files do; a head trained on another CLIP does not go up with it."""
    from huggingface_hub import ModelCard

    from emu_cli.curate.aesthetic import AestheticHead

    clip, head = tmp_path / "clip", tmp_path / "aesthetic.safetensors"
    emu("filter", "train-clip", "--data", world, "--out", clip, "--steps", 3, "--batch-size", 16)
    emu("data", "rate", "--data", world, "--num-images", 60, "--out", tmp_path / "ratings.jsonl")
    emu("filter", "train-aesthetic", "--data", world, "--ratings", tmp_path / "ratings.jsonl",
        "--clip-model", clip, "--out", head)  # fmt: skip

    def scored(clip_model, weights) -> list:
        return ["--clip-model", clip_model, "--filters", "size,aesthetic,clip_score", "--set",
                "size.min_side=8", "--set", f"aesthetic.weights={weights}", "--set",
                "aesthetic.keep_fraction=1"]  # fmt: skip

    emu("filter", "--data", world, "--out", tmp_path / "local", *scored(clip, head))
    refused = emu("push", clip, "--repo", "me/x", "--base-model", "me/y", check=False)
    assert refused.returncode == 1 and "CLIP folder: --base-model" in refused.stderr
    other = shutil.copy(head, tmp_path / "other.safetensors")
    record = json.loads(head.with_suffix(".json").read_text())
    record["clip_fingerprint"] = [-value for value in record["clip_fingerprint"]]
    (tmp_path / "other.json").write_text(json.dumps(record))
    refused = emu("push", clip, "--repo", "me/x", "--aesthetic", other, check=False)
    assert refused.returncode == 1 and "were trained on CLIP model" in refused.stderr

    with FakeHub() as hub:
        env = hub_env(hub) | {"HF_HOME": str(tmp_path / "hf-home")}  # an empty download cache
        emu("push", clip, "--repo", "me/pool-clip", "--aesthetic", head, env=env)
        files = hub.files("me/pool-clip")
        hub_head = "hf-hub:me/pool-clip/aesthetic.safetensors"
        emu("filter", "--data", world, "--out", tmp_path / "hub",
            *scored("hf-hub:me/pool-clip", hub_head), env=env)  # fmt: skip
        downloads = [path for method, path in hub.requests if method == "GET"]
    sent = {name: clip / name for name in ("open_clip_config.json", "open_clip_model.safetensors")}
    sent |= {"aesthetic.safetensors": head, "aesthetic.json": head.with_suffix(".json")}
    for name, path in sent.items():
        assert files[name] == path.read_bytes(), name
        assert f"/me/pool-clip/resolve/main/{name}" in downloads, name
    card_file = tmp_path / "README.md"
    card_file.write_bytes(files["README.md"])
    card = ModelCard.load(card_file)
    assert card.data.library_name == "open_clip" and "clip" in card.data.tags
    assert 'create_model_and_transforms("hf-hub:me/pool-clip")' in card.text
    assert f"aesthetic.weights={hub_head}" in card.text and "3 steps at batch 16" in card.text
    local, hub_loaded = (
        pd.read_parquet(tmp_path / r / "manifest.parquet") for r in ("local", "hub")
    )
    assert local["clip_score"].notna().sum() > 100
    for column in ("aesthetic", "clip_score"):
        pd.testing.assert_series_equal(local[column], hub_loaded[column])
    pushes = json.loads((clip / "emu_clip.json").read_text())["pushes"]
    assert [push["repo"] for push in pushes] == ["me/pool-clip"]
    with pytest.raises(ValueError, match="must be hf-hub:OWNER/NAME/FILE.safetensors"):
        AestheticHead.load("hf-hub:me/pool-clip")


def test_a_pushed_checkpoint_is_named_by_its_hub_repo_in_every_command(checkpoint, world, tmp_path):
    """A checkpoint pushed to a private repo is generated from, quality-tuned and evaluated by
    its Hub name, downloaded by huggingface_hub's own code (with the reader's token) into its
    cache and recorded pinned to the commit; offline, the cache serves it; what is not there
    is named with the way out."""
    from hub_server import commit_id

    def generate(model, out, env) -> bytes:
        emu("generate", "--model", model, "a red star on a sunset background", "-n", 1,
            "--sampling-steps", 2, "--device", "cpu", "--out", tmp_path / out, env=env)  # fmt: skip
        return (tmp_path / out / "000-00.png").read_bytes()

    local = generate(checkpoint, "local", {})
    qt, prompts = tmp_path / "qt", tmp_path / "prompts.txt"
    prompts.write_text("a red star on a sunset background\n")
    with FakeHub() as hub:
        cache = {"HF_HOME": str(tmp_path / "hf-home")}  # an empty download cache
        emu("push", checkpoint, "--repo", "me/emu-latent", "--private", env=hub_env(hub))
        main = commit_id(hub.files("me/emu-latent"))
        reader = hub_env(hub, READ_TOKEN) | cache
        assert generate("me/emu-latent", "hub", reader) == local
        emu("quality-tune", "--model", "hf-hub:me/emu-latent", "--data", world, "--out", qt,
            "--steps", 2, "--no-early-stopping", "--device", "cpu", env=reader)  # fmt: skip
        emu("push", qt, "--repo", "me/emu-latent", "--revision", "tuned", env=hub_env(hub))
        tuned = commit_id(hub.files("me/emu-latent", branch="tuned"))
        emu("evaluate", "--a", "me/emu-latent@tuned", "--b", "me/emu-latent", "--prompts",
            prompts, "--out", tmp_path / "eval", "--sampling-steps", 2, "--device", "cpu",
            "--resamples", 10, env=reader)  # fmt: skip
        # (with another empty cache: huggingface_hub serves what it has cached when the Hub
        # refuses, as when it cannot be reached)
        empty = {"HF_HOME": str(tmp_path / "other-home")}
        for model, token, expected in [
            ("me/emu-latent", None, "private and the token cannot read it"),
            ("me/emu-latent@nope", READ_TOKEN, "has no such revision"),
        ]:
            failed = emu("generate", "--model", model, "a", "--out", tmp_path / "x",
                         env=hub_env(hub, token) | empty, check=False)  # fmt: skip
            assert failed.returncode == 1 and expected in failed.stderr, failed.stderr
    record = json.loads((qt / "emu.json").read_text())
    assert record["parent"] == f"me/emu-latent@{main}" and record["parent_repo"] == "me/emu-latent"
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert (results["a"], results["b"]) == (f"me/emu-latent@{tuned}", f"me/emu-latent@{main}")
    card = emu("push", qt, "--repo", "me/emu-latent-qt", "--dry-run").stdout
    assert "base_model: me/emu-latent" in card, "the card names the Hub model it was tuned from"

    offline = {"HF_HUB_OFFLINE": "1"} | cache  # the Hub is gone: the cache serves what it has
    assert generate("me/emu-latent", "offline", offline) == local
    failed = emu("generate", "--model", "me/other", "a", "--out", tmp_path / "x", env=offline,
                 check=False)  # fmt: skip
    assert failed.returncode == 1
    assert "no checkpoint folder 'me/other' here" in failed.stderr
    assert "not in the Hub download cache and HF_HUB_OFFLINE is set" in failed.stderr


def test_clear_errors_and_nothing_claimed(checkpoint, world):
    with FakeHub() as hub:
        for token, expected in [(None, "no Hugging Face token"), ("hf_wrong", "(401)"),
                                (READ_TOKEN, "(403)")]:  # fmt: skip
            result = emu("push", checkpoint, "--repo", "me/x", env=hub_env(hub, token),
                         check=False)  # fmt: skip
            assert result.returncode == 1 and expected in result.stderr, result.stderr
        hub.drop_next = 1  # the network fails once: the push retries and succeeds
        emu("push", checkpoint, "--repo", "me/retried", env=hub_env(hub))
        assert hub.files("me/retried")
    # The Hub is gone now: its address refuses connections.
    result = emu("push", checkpoint, "--repo", "me/x", env=hub_env(hub), check=False)
    assert result.returncode == 1 and "could not reach the Hub" in result.stderr
    pushes = json.loads((checkpoint / "emu.json").read_text())["pushes"]
    assert [p["repo"] for p in pushes] == ["me/retried"], "only the push that landed is recorded"
    offline = emu("push", checkpoint, "--repo", "me/x", env={"HF_HUB_OFFLINE": "1"}, check=False)
    assert offline.returncode == 1 and "HF_HUB_OFFLINE" in offline.stderr

    # --push-to-hub that cannot work fails before training, not after it: on data it would
    # tune on, a check after training would leave the run folder behind
    out = checkpoint.parent / "qt"
    for repo, env, expected in [
        ("bad repo", {"HF_HUB_OFFLINE": "0", "HF_TOKEN": WRITE_TOKEN}, "is not a Hub repo id"),
        ("me/x", {"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ("me/x", {"HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}, "no Hugging Face token"),
    ]:
        result = emu("quality-tune", "--model", checkpoint, "--data", world, "--out", out,
                     "--steps", 2, "--no-early-stopping", "--push-to-hub", repo, env=env,
                     check=False)  # fmt: skip
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        assert not out.exists()


def test_a_hub_that_never_answers_times_out_with_progress_and_a_clear_error(checkpoint):
    with FakeHub() as hub:
        hub.stalling = True  # it accepts each request and says nothing
        result = emu("push", checkpoint, "--repo", "me/x", "--timeout", 1, env=hub_env(hub),
                     check=False, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "pushing" in result.stderr and "(attempt 1 of 3)" in result.stderr, "progress"
    assert "could not reach the Hub at" in result.stderr
    assert "after 3 attempts: it did not answer within 1 s" in result.stderr
    assert "Traceback" not in result.stderr
    assert "pushes" not in json.loads((checkpoint / "emu.json").read_text())


def test_dry_run_prints_the_files_and_the_card_without_network(checkpoint):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "", "HF_HUB_OFFLINE": "1"}
    printed = emu("push", checkpoint, "--repo", "me/emu-latent", "--dry-run", env=env).stdout
    assert "model repo me/emu-latent" in printed
    assert "unet/diffusion_pytorch_model.safetensors" in printed and "stages/" not in printed
    assert "library_name: diffusers" in printed and "pipeline_tag: text-to-image" in printed
    assert "pushes" not in json.loads((checkpoint / "emu.json").read_text())


def test_an_image_folder_pushed_as_a_model_is_pointed_to_dataset(tmp_path):
    from emu_cli.publish.push import PushError, plan_model

    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a"}\n')
    with pytest.raises(PushError, match="is an image folder: push it with --dataset"):
        plan_model(tmp_path, "me/x")
