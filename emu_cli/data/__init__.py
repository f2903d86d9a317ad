"""Datasets: image folders with metadata.jsonl and WebDataset tar shards, through one reader."""

from emu_cli.data.sources import DatasetError, Sample, SampleIndex, index_dataset

__all__ = ["DatasetError", "Sample", "SampleIndex", "index_dataset"]
