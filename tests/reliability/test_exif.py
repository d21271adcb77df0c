"""Class 10: EXIF orientation is honoured by the data readers and the runner alike, per the record.

New models record ``exif_transpose: true``; a record written before the field existed reads as false, so
artifacts made before keep their behaviour.
"""
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from fgvc_edge.contract.preprocess import Preprocess

ORIENTATION = 0x0112


@pytest.fixture
def sideways_jpeg(tmp_path):
    """A 60×40 photo stored sideways: red left half; EXIF orientation 6 (display rotated 90° clockwise)."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (230, 30, 30)
    pixels[:, 30:] = (30, 30, 230)
    image = Image.fromarray(pixels, "RGB")
    exif = image.getexif()
    exif[ORIENTATION] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, quality=98, exif=exif)
    return str(path)


def upright(path):
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def test_preprocess_turns_the_photo_upright_only_when_the_record_says_so(sideways_jpeg):
    pre = Preprocess(resize_size=48, crop_size=32)
    assert pre.exif_transpose is True  # new records
    np.testing.assert_array_equal(pre(sideways_jpeg), pre(upright(sideways_jpeg)))
    old = Preprocess.from_dict({k: v for k, v in pre.to_dict().items() if k != "exif_transpose"})
    assert old.exif_transpose is False  # records made before the field keep their behaviour
    with Image.open(sideways_jpeg) as stored:
        np.testing.assert_array_equal(old(sideways_jpeg), old(stored.convert("RGB")))
    assert not np.array_equal(pre(sideways_jpeg), old(sideways_jpeg))


def test_training_and_evaluation_readers_agree_with_the_runner(sideways_jpeg):
    from fgvc_edge.datasets import open_image
    from fgvc_edge.train.data import ImageDataset, train_transform
    from fgvc_edge.train.recipes import Augment

    pre = Preprocess(resize_size=48, crop_size=32)
    assert open_image(sideways_jpeg, exif_transpose=True).size == (40, 60)  # upright: portrait
    assert open_image(sideways_jpeg).size == (60, 40)
    evaluation = ImageDataset([(sideways_jpeg, 0)], pre, pre.exif_transpose)
    np.testing.assert_allclose(evaluation[0][0].numpy(), pre(sideways_jpeg), atol=1e-6)
    training = ImageDataset([(sideways_jpeg, 0)], train_transform(pre, Augment(random_crop=False, hflip=False)),
                            pre.exif_transpose)
    np.testing.assert_allclose(training[0][0].numpy(), pre(sideways_jpeg), atol=1e-5)


def test_the_runner_follows_the_artifacts_record(r18_copy, sideways_jpeg):
    from fgvc_edge.runtime import OnnxRunner

    with OnnxRunner(r18_copy) as runner:
        assert runner.preprocess.exif_transpose is True  # a new export
        new = runner.preprocess_images([sideways_jpeg])
    record = json.loads(open(r18_copy + ".json").read())
    del record["preprocess"]["exif_transpose"]  # as an artifact made before the field
    with open(r18_copy + ".json", "w") as fh:
        json.dump(record, fh)
    with OnnxRunner(r18_copy) as runner:
        assert runner.preprocess.exif_transpose is False
        old = runner.preprocess_images([sideways_jpeg])
    assert not np.array_equal(new, old)
