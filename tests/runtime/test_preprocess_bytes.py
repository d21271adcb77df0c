"""Encoded image bytes (what a server receives) preprocess exactly as the same file opened from disk."""
import io

import numpy as np
import pytest
from PIL import Image

from fgvc_edge.contract.preprocess import Preprocess
from fgvc_edge.errors import UserInputError

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "image, fmt",
    [
        (Image.fromarray(RNG.integers(0, 255, (60, 80, 3), dtype=np.uint8)), "JPEG"),
        (Image.fromarray(RNG.integers(0, 255, (60, 80, 4), dtype=np.uint8), "RGBA"), "PNG"),
        (Image.fromarray(RNG.integers(0, 255, (70, 50), dtype=np.uint8), "L"), "PNG"),
        (Image.fromarray(RNG.integers(0, 65535, (50, 50), dtype=np.uint16)), "PNG"),
    ],
    ids=["jpeg-rgb", "png-rgba", "png-gray", "png-16bit"],
)
def test_bytes_equal_the_file(image, fmt, tmp_path):
    path = tmp_path / ("x." + fmt.lower())
    image.save(path, fmt)
    pre = Preprocess(resize_size=40, crop_size=32)
    np.testing.assert_array_equal(pre(path.read_bytes()), pre(str(path)))
    np.testing.assert_array_equal(pre(bytearray(path.read_bytes())), pre(str(path)))


def test_bytes_that_are_not_an_image_are_refused_in_one_line():
    pre = Preprocess(resize_size=40, crop_size=32)
    with pytest.raises(UserInputError, match="^11 bytes are not an image in a format PIL decodes"):
        pre(b"hello world")
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(buffer, "PNG")
    with pytest.raises(UserInputError, match="^cannot decode an image of 100 bytes"):
        pre(buffer.getvalue()[:100])
