"""The shared trainer: one loop for every backend, for pre-training and quality-tuning."""
