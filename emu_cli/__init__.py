"""emu: the Emu quality-tuning recipe as a toolkit."""

__version__ = "0.1.0"
