"""Publishing: checkpoints and curated sets to the Hugging Face Hub, with cards."""
