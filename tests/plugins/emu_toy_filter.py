"""A third-party curation filter, as someone would publish one (e.g. an NSFW filter): it
rejects images darker than a threshold, using only the public filter contract."""

import numpy as np

from emu_cli import hookimpl
from emu_cli.curate.filter import Filter


class BrightnessFilter(Filter):
    name = "brightness"
    description = "mean luminance (0-255); dark images are rejected"
    column = "brightness"
    default_threshold = {"min": 40}

    def score(self, batch, resources):
        return {
            "brightness": [
                float(np.asarray(item.image.convert("L"), dtype=np.float32).mean())
                for item in batch.items
            ]
        }


@hookimpl
def register_filters(register):
    register(BrightnessFilter)
