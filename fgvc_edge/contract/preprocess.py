"""Image preprocessing in numpy + PIL, identical to the torchvision transforms the models train with.

``Preprocess`` is plain data: it travels from a model's config into checkpoints and sidecars, and the
runner applies it without torch. Resize is either shorter-side (torchvision's ``Resize(256)``) or exact
(CMAL-Net's ``Resize((550, 550))``), followed by a centre crop and per-channel normalisation.
Valid on Python 3.8.
"""
import io
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from fgvc_edge.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("shorter_side", "exact")
_PIL_INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}

ImageLike = Union[str, bytes, "Image.Image", np.ndarray]


@dataclass(frozen=True)
class Preprocess:
    """Resize → centre crop → scale to [0, 1] → normalise; output CHW float32."""

    resize_size: int = 256
    crop_size: int = 224
    resize_mode: str = "shorter_side"
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise UserInputError("resize_mode must be one of {}, not {!r}".format(RESIZE_MODES, self.resize_mode))
        if self.interpolation not in _PIL_INTERPOLATION:
            raise UserInputError("unknown interpolation {!r}".format(self.interpolation))
        if self.crop_size < 1 or self.resize_size < self.crop_size:
            raise UserInputError(
                "bad preprocessing sizes: resize {} must be >= crop {} >= 1".format(self.resize_size, self.crop_size)
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UserInputError("mean and std need three values each, std > 0")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def for_input_size(self, size: int) -> "Preprocess":
        """The same recipe at another crop size, the resize scaled by the same ratio (256/224, 550/448)."""
        if size == self.crop_size:
            return self
        resize = int(round(size * self.resize_size / self.crop_size))
        return replace(self, crop_size=int(size), resize_size=max(resize, int(size)))

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Preprocess":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise UserInputError("unknown preprocessing fields: {}".format(", ".join(sorted(unknown))))
        kwargs = dict(data)
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    # -- application ------------------------------------------------------------------------------

    def __call__(self, image: ImageLike) -> np.ndarray:
        """One image → CHW float32 array of shape (3, crop, crop)."""
        img = self._resize(to_rgb(image))
        img = self._center_crop(img)
        array = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def batch(self, images: Sequence[ImageLike]) -> np.ndarray:
        return np.stack([self(image) for image in images]).astype(np.float32, copy=False)

    def _resize(self, img: "Image.Image") -> "Image.Image":
        width, height = img.size
        if self.resize_mode == "exact":
            size = (self.resize_size, self.resize_size)
        else:
            # torchvision.transforms.Resize(int): the shorter side becomes `resize_size`, the longer one is
            # truncated after scaling, exactly as torchvision computes it.
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.resize_size, int(self.resize_size * long / short)
            size = (new_short, new_long) if width <= height else (new_long, new_short)
        if size == (width, height):
            return img
        return img.resize(size, _PIL_INTERPOLATION[self.interpolation])

    def _center_crop(self, img: "Image.Image") -> "Image.Image":
        width, height = img.size
        crop = self.crop_size
        top = int(round((height - crop) / 2.0))
        left = int(round((width - crop) / 2.0))
        return img.crop((left, top, left + crop, top + crop))


def to_rgb(image: ImageLike) -> "Image.Image":
    """Open/convert an image to 8-bit RGB: gray, gray+alpha, RGBA, palette and 16-bit inputs included.

    ``bytes`` are an encoded image (JPEG, PNG, … as a server receives it); a str or path-like is a file.
    """
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif isinstance(image, (bytes, bytearray)):
        image = _decode(image)
    elif not isinstance(image, Image.Image):
        path = str(image)
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except FileNotFoundError:
            raise UserInputError("no such image: {}".format(path)) from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UserInputError("cannot read image {}: {}".format(path, exc)) from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit gray: PIL's convert("L") clips instead of scaling, so scale by the range.
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or data.max() > 255 else 255.0
        image = Image.fromarray(np.clip(data / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    # Alpha is dropped as torchvision's ImageFolder loader (`convert("RGB")`) drops it in training.
    return image.convert("RGB") if image.mode != "RGB" else image


def _decode(data: bytes) -> "Image.Image":
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.copy()
    except Image.UnidentifiedImageError:
        raise UserInputError(
            "{} bytes are not an image in a format PIL decodes (JPEG, PNG, WebP, ...)".format(len(data))
        ) from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserInputError("cannot decode an image of {} bytes: {}".format(len(data), exc)) from None


def _array_to_pil(array: np.ndarray) -> "Image.Image":
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise UserInputError("an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {}".format(array.shape))
    if array.dtype == np.uint16:
        array = (array.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and float(np.nanmax(array)) <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    channels = array.shape[2]
    if channels == 1:
        return Image.fromarray(array[:, :, 0], "L")
    return Image.fromarray(np.ascontiguousarray(array), "RGB" if channels == 3 else "RGBA")
