"""Checkpoints: the model folder with its provenance record, and resumable training state."""
