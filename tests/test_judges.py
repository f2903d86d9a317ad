"""The real judges on small models of their classes, built from config and saved as their
publishers lay them out: each loads from a folder (and from a Hub repo, through the same code),
scores as its model does, composes, drives quality-tuning and evaluation, and is calibrated
against people's votes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
from hub_server import WRITE_TOKEN, FakeHub
from PIL import Image

from conftest import blip_text, blip_vit, emu, invoke
from emu_cli.data import index_dataset
from emu_cli.errors import EmuError
from emu_cli.human.store import AnnotationStore
from emu_cli.plugin.registry import judge as judge_from_spec


@pytest.fixture(scope="module")
def pictures(world):
    samples = index_dataset(world).samples[:6]
    return [Image.open(s.path).convert("RGB") for s in samples], [s.caption for s in samples]


def _clip(folder):
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def _cosines(folder, images, prompts, weights=None):
    model, preprocess, tokenizer = _clip(folder)
    if weights is not None:
        model.load_state_dict(weights)
    with torch.no_grad():
        a = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
        b = model.encode_text(tokenizer(prompts), normalize=True)
    return a, (a * b).sum(1).numpy()


def _logistic(raw, center, spread):
    return 1 / (1 + np.exp(-(raw - center) / spread))


def test_each_judge_loads_from_a_folder_and_scores_as_its_model_does(judge_weights, pictures):
    from safetensors.torch import load_file
    from transformers import CLIPModel, CLIPProcessor

    from emu_cli.curate.aesthetic import build_head
    from emu_cli.judges.clip import laion_head

    images, prompts = pictures
    embeddings, cosines = _cosines(judge_weights.clip, images, prompts)
    head = build_head(embeddings.shape[1]).eval()
    head.load_state_dict(load_file(judge_weights.clip / "aesthetic.safetensors"))
    _, laion_cosines = _cosines(judge_weights.laion, images, prompts)
    laion_embeddings, _ = _cosines(judge_weights.laion, images, prompts)
    laion = laion_head(judge_weights.laion / "sac+logos+ava1-l14-linearMSE.pth")
    tuned = torch.load(judge_weights.hps / "HPS_v2.1_compressed.pt", weights_only=True)
    _, hps = _cosines(judge_weights.hps, images, prompts, tuned["state_dict"])
    model = CLIPModel.from_pretrained(judge_weights.pickscore)
    processor = CLIPProcessor.from_pretrained(judge_weights.pickscore)
    with torch.no_grad():
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
        out = model(**inputs)
        pick = (out.logits_per_image.diagonal()).numpy()  # logit scale x cosine, as PickScore
    with torch.no_grad():
        expected = {
            f"clipscore@{judge_weights.clip}": {"faithfulness": (cosines, 0.25, 0.03)},
            f"clip-aesthetic@{judge_weights.clip}": {
                "appeal": (head(embeddings).squeeze(1).numpy(), 5.5, 0.75),
                "faithfulness": (cosines, 0.25, 0.03),
            },
            f"clip-aesthetic@{judge_weights.laion}": {
                "appeal": (laion(laion_embeddings).squeeze(1).numpy(), 5.5, 0.75),
                "faithfulness": (laion_cosines, 0.25, 0.03),
            },
            f"hpsv2@{judge_weights.hps}": {"appeal": (hps, 0.27, 0.015)},
            f"pickscore@{judge_weights.pickscore}": {"appeal": (pick, 21.0, 1.0)},
        }
    for spec, measures in expected.items():
        scores = judge_from_spec(spec, complete=False).score(images, prompts)
        for measure, (raw, center, spread) in measures.items():
            np.testing.assert_allclose(scores[f"raw_{measure}"], raw, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(scores[measure], _logistic(raw, center, spread), rtol=1e-4)
            assert ((scores[measure] >= 0) & (scores[measure] <= 1)).all(), spec


def test_imagereward_reads_its_published_pickle_and_scores_as_blip_runs_it(judge_weights, pictures):
    """The vision tower against timm's ViT (whose names BLIP's checkpoint keeps), then the
    whole reward as ImageReward.score computes it."""
    from torchvision import transforms
    from transformers import BertTokenizer

    images, prompts = pictures
    folder = judge_weights.imagereward
    state = torch.load(folder / "ImageReward.pt", weights_only=True)

    def part(prefix):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    vit = blip_vit().eval()
    vit.load_state_dict(part("blip.visual_encoder."))
    med = json.loads((folder / "med_config.json").read_text())
    text = blip_text(med).eval()
    text.load_state_dict(part("blip.text_encoder."), strict=False)  # position_ids is a buffer
    w = part("mlp.layers.")
    preprocess = transforms.Compose([  # ImageReward's _transform, written out
        transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(32),
        transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073),
                             (0.26862954, 0.26130258, 0.27577711)),
    ])  # fmt: skip
    words = BertTokenizer.from_pretrained(folder)(
        prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    )
    with torch.no_grad():
        pixels = torch.stack([preprocess(image) for image in images])
        seen = vit.forward_features(pixels)
        out = text(
            words.input_ids,
            attention_mask=words.attention_mask,
            encoder_hidden_states=seen,
            encoder_attention_mask=torch.ones(seen.shape[:2], dtype=torch.long),
        )
        x = out.last_hidden_state[:, 0]
        for i in (0, 2, 4, 6, 7):  # its MLP: linear layers, no activations, dropout off
            x = x @ w[f"{i}.weight"].T + w[f"{i}.bias"]
        reward = ((x.squeeze(1) - 0.16717362830052426) / 1.0333394966054072).numpy()

    judge = judge_from_spec(f"imagereward@{folder}", complete=False)
    scores = judge.score(images, prompts)
    model, _ = judge._loaded
    with torch.no_grad():
        torch.testing.assert_close(model.vision(pixel_values=pixels).last_hidden_state, seen)
    np.testing.assert_allclose(scores["raw_appeal"], reward, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores["appeal"], _logistic(reward, 0.0, 1.0), rtol=1e-4)
    assert judge.measures == ("appeal",)


def test_vqascore_is_clip_flant5s_probability_of_yes(judge_weights, pictures):
    """Each image alone, as t2v_metrics builds CLIP-FlanT5's input: the template's text
    tokenised around <image>, the tower's second-last layer's patches projected there, and
    the mean log-probability of "Yes" and its end mark over the tokenizer's vocabulary."""
    import torch.nn.functional as F
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionModel,
        T5ForConditionalGeneration,
    )

    images, prompts = pictures
    prompts = [*prompts[:-1], prompts[-1] + " and a much longer ending than the others"]
    folder = judge_weights.vqascore
    config = json.loads((folder / "config.json").read_text())
    state = {}
    for shard in sorted(folder.glob("*.bin")):
        state.update(torch.load(shard, weights_only=True))
    t5 = T5ForConditionalGeneration.from_pretrained(folder).eval()  # transformers' own reading
    tower = CLIPVisionModel.from_pretrained(config["mm_vision_tower"]).eval()
    processor = CLIPImageProcessor.from_pretrained(config["mm_vision_tower"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    system = (
        "A chat between a curious user and an artificial intelligence assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions."
    )
    expected = []
    for image, prompt in zip(images, prompts, strict=True):
        side = max(image.size)  # LLaVA's expand2square, in the processor's mean colour
        square = Image.new("RGB", (side, side), tuple(int(255 * m) for m in processor.image_mean))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        question = f'Does this figure show "{prompt}"? Please answer yes or no.'
        before = tokenizer(system + " USER: ").input_ids
        after = tokenizer("\n" + question + " ASSISTANT: ").input_ids
        labels = torch.tensor([tokenizer("Yes").input_ids])
        with torch.no_grad():
            pixels = processor(images=square, return_tensors="pt").pixel_values
            patches = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
            features = F.linear(
                F.gelu(
                    F.linear(patches, state["mm_projector.0.weight"], state["mm_projector.0.bias"])
                ),
                state["mm_projector.2.weight"],
                state["mm_projector.2.bias"],
            )
            embed = t5.get_input_embeddings()
            inputs = torch.cat(
                [embed(torch.tensor([before])), features, embed(torch.tensor([after]))], dim=1
            )
            logits = t5(inputs_embeds=inputs, labels=labels).logits[..., : len(tokenizer)]
            expected.append(torch.exp(-F.cross_entropy(logits[0], labels[0])).item())

    judge = judge_from_spec(f"vqascore@{folder}", complete=False)
    scores = judge.score(images, prompts)  # one batch: prompts of different lengths padded
    np.testing.assert_allclose(scores["raw_faithfulness"], expected, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(
        scores["faithfulness"], _logistic(np.array(expected), 0.5, 0.1), rtol=1e-4
    )
    assert judge.measures == ("faithfulness",)


def test_judges_compose_and_bad_names_are_refused_with_the_way_out(judge_weights, pictures):
    images, prompts = pictures
    hps, clip = f"hpsv2@{judge_weights.hps}", f"clipscore@{judge_weights.clip}"
    composed = judge_from_spec(f"appeal={hps},faithfulness={clip}")
    scores = composed.score(images, prompts)
    alone = {
        "appeal": judge_from_spec(hps, complete=False).score(images, prompts)["appeal"],
        "faithfulness": judge_from_spec(clip, complete=False).score(images, prompts)[
            "faithfulness"
        ],
    }
    for measure, values in alone.items():
        np.testing.assert_allclose(scores[measure], values, rtol=1e-5)
    assert composed.spec == f"appeal={hps},faithfulness={clip}"
    for spec, message in [
        ("clipscore", "measures faithfulness only: compose it"),
        ("nope", r"unknown judge 'nope' \(registered: clip-aesthetic, clipscore, hpsv2"),
        ("appeal=clipscore,faithfulness=clipscore", "does not measure appeal"),
        ("appeal=world", "names no judge for faithfulness"),
        ("looks=world", "MEASURE=JUDGE"),
        ("world@elsewhere", "takes no weights source"),
    ]:
        with pytest.raises(EmuError, match=message):
            judge_from_spec(spec)
    with pytest.raises(EmuError, match="pickled weights"):  # a pickle beside the published one
        (judge_weights.hps / "extra.bin").write_bytes(b"\x80\x04")
        try:
            judge_from_spec(hps, complete=False).score(images, prompts)
        finally:
            (judge_weights.hps / "extra.bin").unlink()


def _store_with_votes(world, folder, judge):
    """Six pairs of world images voted by three people, the judge's preference known: the
    majority agrees with the judge on 3 of the 5 decided pairs, and people with each other on
    9 of the 11 votes that have a decided majority of the others; a seventh pair shows one
    image twice (3 more agreeing votes, and a pair no judge can tell)."""
    samples = index_dataset(world).samples[:12]
    images = [Image.open(s.path).convert("RGB") for s in samples]
    prompt = "a red star on a sunset background"
    appeal = judge.score(images, [prompt] * 12)["appeal"]
    store = AnnotationStore(folder / "annotations.sqlite")
    # by pair: votes for the judge's choice (J) or the other image (N)
    votes = ["JJJ", "JJN", "JJJ", "NNN", "NNJ", "JNT"]
    for i, pattern in enumerate(votes):
        a, b = 2 * i, 2 * i + 1
        for side, k in (("a", a), ("b", b)):
            images[k].save(folder / f"{i}{side}.png")
        store.add_comparison(f"p{i}", prompt, f"{i}a.png", f"{i}b.png", "A", "B")
        judged = "a" if appeal[a] > appeal[b] else "b"
        other = "b" if judged == "a" else "a"
        for person, vote in enumerate(pattern):
            choice = {"J": judged, "N": other, "T": "tie"}[vote]
            store.add_annotator(f"person-{person}")
            store.vote(f"p{i}", "appeal", f"person-{person}", "a", choice)
    images[0].save(folder / "same.png")  # one image on both sides: no judge can tell
    store.add_comparison("p6", prompt, "same.png", "same.png", "A", "B")
    for person in range(3):
        store.vote("p6", "appeal", f"person-{person}", "a", "a")
    store.close()


def test_calibration_gives_the_agreement_counted_by_hand(world, tmp_path):
    from emu_cli.plugin.registry import get_judge

    _store_with_votes(world, tmp_path, get_judge("world"))
    result = invoke("judge", "calibrate", "--votes", tmp_path, "--judge", "world",
                    "--resamples", 200)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "calibration" / "calibration.json").read_text())
    appeal = report["protocols"]["appeal"]
    assert appeal["pairs_voted"] == 7 and appeal["pairs_decided"] == 6
    assert appeal["judges"]["world"]["agreement"] == 0.6
    assert appeal["judges"]["world"]["count"] == 5
    assert appeal["judges"]["world"]["cannot_tell"] == 1
    assert appeal["people"]["agreement"] == round(12 / 14, 4) and appeal["people"]["count"] == 14
    low, high = appeal["judges"]["world"]["interval"]
    assert low <= 0.6 <= high
    assert "| appeal | world | 60.0 % |" in result.output
    assert (tmp_path / "calibration" / "calibration.png").stat().st_size > 10_000


def test_a_judge_from_the_hub_loads_through_the_folder_code(world, judge_weights, tmp_path):
    from emu_cli.plugin.registry import get_judge

    clip = shutil.copytree(judge_weights.clip, tmp_path / "clip",
                           ignore=shutil.ignore_patterns("aesthetic*"))  # fmt: skip
    record = {"steps": 0, "batch_size": 0, "learning_rate": 0, "seed": 0, "samples": 0,
              "data": "none", "data_fingerprint": "-", "passes": 0, "final_loss": None}  # fmt: skip
    (clip / "emu_clip.json").write_text(json.dumps(record))  # as `emu filter train-clip` writes
    _store_with_votes(world, tmp_path, get_judge("world"))
    spec = f"clip-aesthetic@{judge_weights.clip}"
    here = invoke("judge", "calibrate", "--votes", tmp_path, "--judge", spec, "--resamples", 50,
                  "--out", tmp_path / "here")  # fmt: skip
    assert here.exit_code == 0, here.output
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": WRITE_TOKEN,
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
        emu("push", clip, "--repo", "me/clip", "--aesthetic",
            judge_weights.clip / "aesthetic.safetensors", env=env)  # fmt: skip
        emu("judge", "calibrate", "--votes", tmp_path, "--judge", "clip-aesthetic@me/clip",
            "--resamples", 50, "--out", tmp_path / "hub", env=env)  # fmt: skip
    read = lambda name: json.loads((tmp_path / name / "calibration.json").read_text())  # noqa: E731
    from_here, from_hub = read("here")["protocols"], read("hub")["protocols"]
    assert (
        from_here["appeal"]["judges"][spec]
        == from_hub["appeal"]["judges"]["clip-aesthetic@me/clip"]
    ), "the same weights, read from the Hub, judge the same"


def test_a_composed_judge_scores_an_evaluation_beside_the_votes(
    tiny_latent, judge_weights, tmp_path
):
    """(Early stopping by a real judge: plugins/latent_diffusion/tests/test_latent.py.) A
    quick evaluation on a seeded sample of a prompt set."""
    from emu_cli.evaluate.prompts import load_prompts, sample_prompts

    spec = (
        f"appeal=imagereward@{judge_weights.imagereward},"
        f"faithfulness=vqascore@{judge_weights.vqascore}"
    )
    out = tmp_path / "eval"
    result = invoke("evaluate", "--a", tiny_latent, "--b", tiny_latent, "--prompts",
                    "builtin:world-small", "--max-prompts", 2, "--seed", 3, "--out", out,
                    "--sampling-steps", 2, "--judge", spec, "--resamples", 50,
                    "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["pairs"] == 2 and results["max_prompts"] == 2
    drawn = sample_prompts(load_prompts("builtin:world-small"), 2, seed=3)
    index = json.loads((out / "images" / "a" / "index.json").read_text())
    assert index["prompts"] == [p.text for p in drawn]
    proxies = results["proxies"]
    for measure in ("appeal", "faithfulness", "raw_appeal", "raw_faithfulness"):
        sides = proxies[f"{spec}_{measure}"]["all"]
        assert sides["a"] == sides["b"], "one model on both sides scores the same"


def test_partiprompts_come_from_the_hub_through_datasets_with_their_categories(tmp_path):
    """builtin:parti as a user with network reads it: the Hub dataset, here a local Hub
    holding a few rows in its columns."""
    rows = [("a red panda eating bamboo", "Animals", "Basic"),
            ("the Eiffel tower at night", "World Knowledge", "Basic"),
            ("a cat with a hat, in the style of Klimt", "Arts", "Style & Format")]  # fmt: skip
    folder = tmp_path / "parti"
    folder.mkdir()
    lines = ["Prompt\tCategory\tChallenge\tNote", *("\t".join([*r, ""]) for r in rows)]
    (folder / "PartiPrompts.tsv").write_text("\n".join(lines) + "\n")
    script = (
        "import json; from emu_cli.evaluate.prompts import load_prompts; "
        "print(json.dumps([[p.text, list(p.tags)] for p in load_prompts('builtin:parti')]))"
    )
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": WRITE_TOKEN,
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
        upload = ("from huggingface_hub import HfApi; import sys; api = HfApi(); "
                  "api.create_repo('nateraw/parti-prompts', repo_type='dataset'); "
                  "api.upload_folder(repo_id='nateraw/parti-prompts', repo_type='dataset', "
                  "folder_path=sys.argv[1])")  # fmt: skip
        subprocess.run([sys.executable, "-c", upload, folder], env={**os.environ, **env},
                       check=True, capture_output=True)  # fmt: skip
        read = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env},
                              capture_output=True, text=True)  # fmt: skip
    assert read.returncode == 0, read.stderr[-2000:]
    assert json.loads(read.stdout.splitlines()[-1]) == [
        [text, [f"category:{category}", f"challenge:{challenge}"]]
        for text, category, challenge in rows
    ]
    from emu_cli.evaluate.protocol import reported

    assert reported("category:Animals") and reported("unseen") and not reported("star")


def test_a_judge_curates_as_it_judges(world, judge_weights, tmp_path):
    """The judge that stops quality-tuning curates the pool: its top quarter is kept, scored
    in worker processes as the judge scores in this one."""
    import pandas as pd

    spec = f"clip-aesthetic@{judge_weights.clip}"
    out = tmp_path / "run"
    result = invoke("filter", "--data", world, "--out", out, "--filters", "judge",
                    "--set", f"judge.spec={spec}", "--set", "judge.keep_fraction=0.25",
                    "--workers", 2, "--chunk-size", 16)  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    samples = index_dataset(world).samples
    images = [Image.open(s.path).convert("RGB") for s in samples]
    expected = judge_from_spec(spec).score(images, [s.caption for s in samples])
    scored = manifest.loc[[s.key for s in samples]]
    np.testing.assert_allclose(scored["judge"], expected["appeal"], atol=1e-4)
    np.testing.assert_allclose(scored["judge_raw"], expected["raw_appeal"], atol=1e-3)
    kept = set(manifest.index[manifest["status"] == "kept"])
    ranked = [samples[i].key for i in np.argsort(-expected["appeal"], kind="stable")]
    assert kept == set(ranked[: int(np.ceil(0.25 * len(samples)))])
    refused = invoke("filter", "--data", world, "--out", tmp_path / "no", "--filters", "judge",
                     "--set", f"judge.spec=clipscore@{judge_weights.clip}")  # fmt: skip
    assert refused.exit_code != 0 and "does not measure appeal" in refused.output
