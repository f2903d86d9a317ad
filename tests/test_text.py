import pytest
import torch

from emu_cli.kit.text import load_text_encoder, offline_clip_tokenizer

TEXTS = [
    "a red star on a sunset background",
    "Photo of a RED star over sand!!",
    "naïve café 東京 🙂 don't",
    "",
    "word " * 100,
]


def test_offline_tokenizer_matches_open_clip_id_for_id():
    import open_clip

    reference = open_clip.tokenize(TEXTS, context_length=77)
    ours = offline_clip_tokenizer(77)(
        TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    used = reference != 0  # open_clip pads with 0, CLIP's own tokenizer with end-of-text
    assert torch.equal(ours[used], reference[used])
    assert (ours[~used] == 49407).all()


def test_saved_text_side_reloads_from_a_local_folder(tmp_path, tiny_latent):
    tokenizer, encoder = load_text_encoder(str(tiny_latent))  # a pipeline folder's layout
    ids = tokenizer(TEXTS[:1], return_tensors="pt").input_ids
    assert ids[0, 0] == 49406 and encoder(ids)[0].shape[-1] == encoder.config.hidden_size
    encoder.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")  # a CLIP model folder's layout
    again_tokenizer, again = load_text_encoder(str(tmp_path / "clip"))
    assert torch.equal(again(ids)[0], encoder(ids)[0])


def test_missing_pretrained_text_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="text encoder '.*nothing-here' could not be loaded"):
        load_text_encoder(str(tmp_path / "nothing-here"))
