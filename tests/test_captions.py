"""Captions written by a model for a folder of images: a real BLIP (transformers' classes, a tiny
one built from config and saved locally, loaded by the same code as a Hub name), NAME.txt
beside each image that has none, read back by the one dataset reader."""

import shutil

import pytest

from conftest import invoke
from emu_cli.data import index_dataset

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "blue", "star",
         "ring", "on", "the", "sky", "sand", "photo", "of"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("blip")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    text = dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64, bos_token_id=5,
                eos_token_id=3, sep_token_id=3, pad_token_id=0, encoder_hidden_size=32)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=8)  # fmt: skip
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=16)
    )
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return folder / "model"


def test_a_folder_of_images_gets_a_caption_beside_each_for_people_to_correct(
    tiny_blip, world, tmp_path
):
    photos = tmp_path / "photos" / "trip"
    photos.mkdir(parents=True)
    for image in sorted((world / "images").iterdir())[:5]:
        shutil.copy(image, photos)
    first = sorted(photos.iterdir())[0]
    first.with_suffix(".txt").write_text("a caption a person wrote\n")
    pictures = {p: p.read_bytes() for p in photos.iterdir() if p.suffix != ".txt"}
    (photos / "broken.png").write_bytes(b"\x89PNG not an image")

    result = invoke("data", "caption", "--data", tmp_path / "photos",
                    "--captioner", f"blip@{tiny_blip}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 4 captions" in result.output and "(1 images had one already)" in result.output
    assert "1 images left without a caption, e.g. trip/broken.png (" in result.output
    assert first.with_suffix(".txt").read_text() == "a caption a person wrote\n", "kept"

    index = index_dataset(tmp_path / "photos")
    assert len(index.samples) == 5 and [k for k, _ in index.rejected] == ["trip/broken.png"]
    written = [s.caption for s in index.samples if s.key != f"trip/{first.name}"]
    assert all(set(c.split()) <= set(WORDS) and c for c in written), written

    again = invoke("data", "caption", "--data", tmp_path / "photos", "--captioner",
                   f"blip@{tiny_blip}", "--overwrite")  # fmt: skip
    assert again.exit_code == 0 and "wrote 5 captions" in again.output, again.output

    unknown = invoke("data", "caption", "--data", photos, "--captioner", "nope")
    assert unknown.exit_code == 1 and "unknown captioner 'nope' (registered: blip" in (
        unknown.output
    )
    listed = invoke("data", "caption", "--data", world, "--captioner", f"blip@{tiny_blip}")
    assert listed.exit_code == 1 and "keeps its captions in metadata.jsonl" in listed.output
    assert all(p.read_bytes() == data for p, data in pictures.items()), "images untouched"
