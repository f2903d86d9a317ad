"""Overlaid text: words read by rapidocr (PP-OCR detection + recognition, models in its wheel).

Speed without losing recall: the image is scaled so its longer side is ``side`` pixels,
detection runs at that size instead of rapidocr's default upscaling to 736 px (130 ms an
image here), and the angle classifier is off (the count of words does not depend on their
orientation). Recognition runs only on detected boxes. Measured on the world's 256 px pool
(one core; recall on 700 images with overlaid text, no false positive on 700 without):
side 256: 19.6 ms, recall 100%; 192: 12.2 ms, 99.3%; 160: 9.4 ms, 97.1%.
A word is a run of at least ``min_word_chars`` letters or digits, so a shape read as "O" or
"+" is not text.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources


class OcrFilter(Filter):
    name = "ocr"
    description = "number of words of overlaid text (rapidocr)"
    column = "ocr_words"
    higher_is_better = False
    options = {"side": 192, "min_word_chars": 2, "text_score": 0.5}
    default_threshold = {"max": 0}

    def setup(self, resources: Resources) -> None:
        from rapidocr_onnxruntime import RapidOCR

        # "max" with a limit above the image size means: detect at the size it is given.
        self.engine = RapidOCR(
            det_limit_side_len=4096,
            det_limit_type="max",
            use_cls=False,
            text_score=self.settings["text_score"],
            intra_op_num_threads=1,
            inter_op_num_threads=1,
        )
        self.word = re.compile(rf"[^\W_]{{{int(self.settings['min_word_chars'])},}}")

    def words(self, image: Image.Image) -> int:
        scale = self.settings["side"] / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        found, _ = self.engine(np.asarray(image)[:, :, ::-1], use_cls=False)
        return sum(len(self.word.findall(text)) for _box, text, _score in found or ())

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        return {"ocr_words": [self.words(item.image) for item in batch.items]}
