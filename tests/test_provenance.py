"""emu.json as one typed record: written and read in one place; older folders still load."""

import json

import pytest

from emu_cli.checkpoint.provenance import (
    FORMAT_VERSION,
    CheckpointError,
    DataRecord,
    Provenance,
    QualityTuningRecord,
)

# What emu wrote before the record had a format version (a quality-tuned latent model).
FORMAT_1 = {
    "files": ["model_index.json", "unet"],
    "backend": "latent",
    "options": {"fourier_frequencies": 4},
    "emu_version": "0.1.0",
    "saved_at": "2026-11-28T10:00:00Z",
    "preset": "small",
    "stages_completed": ["autoencoder", "denoiser"],
    "recipes": {"denoiser": {"steps": 1800}, "quality-tune": {"steps": 600}},
    "data": {"source": "curated", "fingerprint": "ab12", "samples": 132,
             "rejected_while_indexing": 0, "upscaled": 0},
    "pretraining_data": {"source": "pool", "fingerprint": "cd34", "samples": 5000,
                         "rejected_while_indexing": 2},
    "parent": "runs/latent/pre",
    "parent_repo": None,
    "processes": 1,
    "stage": "quality-tune",
    "steps": {"autoencoder": 900, "denoiser": 1800, "quality-tune": 225},
    "step": 225,
    "quality_tuning": {"stage": "denoiser", "steps_trained": 300, "chosen_step": 225,
                       "stopped_early": None, "judge": "world", "curve": {"best_step": 225},
                       "encoder_calls_while_training": 0, "cached_rows": 528},
}  # fmt: skip


def test_a_folder_from_before_the_format_version_loads_as_format_1(tmp_path):
    (tmp_path / "emu.json").write_text(json.dumps(FORMAT_1))
    record = Provenance.read(tmp_path)
    assert record.format_version == 1
    assert record.data == DataRecord("curated", "ab12", 132, 0, 0)
    assert record.pretraining_data.samples == 5000
    assert isinstance(record.quality_tuning, QualityTuningRecord)
    assert record.quality_tuning.chosen_step == 225 and record.steps["quality-tune"] == 225
    assert record.parent_repo is None and record.adopted is None


def test_writing_keeps_every_key_and_adds_the_version(tmp_path):
    record = Provenance.from_dict({**FORMAT_1, "from_a_newer_emu": {"x": 1}})
    record.with_changes(format_version=FORMAT_VERSION).write(tmp_path)
    written = json.loads((tmp_path / "emu.json").read_text())
    expected = {k: v for k, v in FORMAT_1.items() if v is not None}
    assert written == {**expected, "from_a_newer_emu": {"x": 1}, "format_version": FORMAT_VERSION}
    assert Provenance.read(tmp_path).unknown == {"from_a_newer_emu": {"x": 1}}


def test_a_record_that_is_not_one_names_the_file(tmp_path):
    (tmp_path / "emu.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="emu.json' is not valid JSON"):
        Provenance.read(tmp_path)
    (tmp_path / "emu.json").write_text(json.dumps({"preset": "tiny"}))
    with pytest.raises(CheckpointError, match="does not name a backend"):
        Provenance.read(tmp_path)
    (tmp_path / "emu.json").write_text(json.dumps({"backend": "x", "data": {"where": 1}}))
    with pytest.raises(CheckpointError, match="is not a provenance record"):
        Provenance.read(tmp_path)
