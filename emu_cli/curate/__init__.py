"""Automatic curation (``emu filter``): the paper's automatic filtering as pluggable filters."""
