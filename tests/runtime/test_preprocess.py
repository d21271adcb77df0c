"""The runner's numpy preprocessing must equal the torchvision transforms the models train with."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from fgvc_edge.errors import UserInputError
from fgvc_edge.contract.preprocess import Preprocess, to_rgb


def torchvision_pipeline(pre: Preprocess):
    resize = pre.resize_size if pre.resize_mode == "shorter_side" else (pre.resize_size, pre.resize_size)
    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(pre.crop_size),
            T.ToTensor(),
            T.Normalize(pre.mean, pre.std),
        ]
    )


@pytest.mark.parametrize(
    "pre",
    [
        Preprocess(resize_size=73, crop_size=64),
        Preprocess(resize_size=79, crop_size=64, resize_mode="exact", mean=(0.5,) * 3, std=(0.5,) * 3),
    ],
)
@pytest.mark.parametrize("size", [(120, 90), (90, 120), (73, 73), (301, 157)])
def test_matches_torchvision(pre, size):
    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    ours = pre(img)
    ref = torchvision_pipeline(pre)(img).numpy()
    assert ours.shape == (3, pre.crop_size, pre.crop_size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_image_modes_become_rgb(tmp_path):
    gray16 = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    assert gray16.mode.startswith("I;16")
    rgba = Image.new("RGBA", (40, 30), (10, 20, 30, 0))
    gray = Image.new("L", (20, 20), 128)
    palette = gray.convert("P")
    for image in (gray16, rgba, gray, palette):
        out = to_rgb(image)
        assert out.mode == "RGB" and out.size == image.size
    # 16-bit is scaled by its range, not clipped: the brightest pixel maps near white.
    assert np.asarray(to_rgb(gray16)).max() >= 250
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [10, 20, 30]
    path = tmp_path / "g.png"
    gray16.save(path)
    assert to_rgb(str(path)).mode == "RGB"


def test_arrays_and_errors(tmp_path):
    pre = Preprocess(resize_size=36, crop_size=32)
    assert pre(np.zeros((50, 40), np.uint8)).shape == (3, 32, 32)
    assert pre(np.ones((50, 40, 3), np.float32)).shape == (3, 32, 32)
    with pytest.raises(UserInputError):
        pre(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(UserInputError, match="no such image"):
        pre(str(tmp_path / "missing.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserInputError, match="cannot read image"):
        pre(str(bad))


def test_for_input_size_scales_resize():
    assert Preprocess(resize_size=256, crop_size=224).for_input_size(448).resize_size == 512
    assert Preprocess(resize_size=550, crop_size=448, resize_mode="exact").for_input_size(224).resize_size == 275


def test_round_trip_and_validation():
    pre = Preprocess(resize_size=550, crop_size=448, resize_mode="exact", mean=(0.5,) * 3, std=(0.5,) * 3)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(UserInputError):
        Preprocess(resize_size=100, crop_size=200)
    with pytest.raises(UserInputError):
        Preprocess.from_dict({"crop": 3})
