"""Image preprocessing in numpy + PIL, identical to the torchvision transforms the models train with.

``Preprocess`` is plain data: it travels from a model's config into checkpoints and sidecars, and the
runner applies it without torch. Resize is either shorter-side (torchvision's ``Resize(256)``) or exact
(CMAL-Net's ``Resize((550, 550))``), followed by a centre crop and per-channel normalisation.

``exif_transpose``: a photo file's EXIF orientation (a phone held sideways) is applied first
(``PIL.ImageOps.exif_transpose``), by the training readers and the runner alike. New models record True; a
record written before the field existed reads as False, so artifacts made before keep their behaviour.
Valid on Python 3.8.
"""
import io
import math
import os
import stat
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps

from fgvc_edge.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("shorter_side", "exact")
_PIL_INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}

_EXIF_ORIENTATION = 0x0112
# The resize before the centre crop: 4 × contract.limits.MAX_INPUT_SIZE. Written out rather than imported so
# this module stays self-contained (fgvc_edge/serve copies it into Triton models, where only errors is provided).
MAX_RESIZE_SIZE = 8192

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
    exif_transpose: bool = True

    def __post_init__(self) -> None:
        self._check_types()
        if self.resize_mode not in RESIZE_MODES:
            raise UserInputError("resize_mode must be one of {}, not {!r}".format(RESIZE_MODES, self.resize_mode))
        if self.interpolation not in _PIL_INTERPOLATION:
            raise UserInputError("unknown interpolation {!r}".format(self.interpolation))
        if self.crop_size < 1 or self.resize_size < self.crop_size or self.resize_size > MAX_RESIZE_SIZE:
            raise UserInputError("bad preprocessing sizes: need {} >= resize {} >= crop {} >= 1".format(
                MAX_RESIZE_SIZE, self.resize_size, self.crop_size))
        if min(self.std) <= 0:
            raise UserInputError("preprocessing std must be > 0, got {}".format(list(self.std)))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def _check_types(self) -> None:
        """Records come from files anyone can edit: every field has its type before any arithmetic."""
        for key in ("resize_size", "crop_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserInputError("preprocessing {} must be an integer, got {!r}".format(key, value))
        for key in ("resize_mode", "interpolation"):
            if not isinstance(getattr(self, key), str):
                raise UserInputError("preprocessing {} must be a string, got {!r}".format(key, getattr(self, key)))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
                raise UserInputError("preprocessing {} must be three finite numbers, got {!r}".format(key, value))
        if not isinstance(self.exif_transpose, bool):
            raise UserInputError("preprocessing exif_transpose must be true or false, got {!r}".format(
                self.exif_transpose))

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
        if not isinstance(data, dict):
            raise UserInputError("a preprocessing record must be a JSON object, got {}".format(type(data).__name__))
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise UserInputError("unknown preprocessing fields: {}".format(", ".join(sorted(unknown))))
        kwargs = dict(data)
        # Records written before EXIF orientation was honoured keep their behaviour.
        kwargs.setdefault("exif_transpose", False)
        return cls(**kwargs)

    # -- application ------------------------------------------------------------------------------

    def __call__(self, image: ImageLike) -> np.ndarray:
        """One image → CHW float32 array of shape (3, crop, crop)."""
        img = self._resize(to_rgb(image, exif_transpose=self.exif_transpose))
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


def to_rgb(image: ImageLike, exif_transpose: bool = False) -> "Image.Image":
    """Open/convert an image to 8-bit RGB: gray, gray+alpha, RGBA, palette and 16-bit inputs included;
    with ``exif_transpose``, turned upright as its EXIF orientation says.

    ``bytes`` are an encoded image (JPEG, PNG, … as a server receives it); a str or path-like is a file.
    """
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif isinstance(image, (bytes, bytearray)):
        image = _decode(image)
    elif not isinstance(image, Image.Image):
        image = _open(str(image))
    if exif_transpose and _orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
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


def _orientation(image: "Image.Image") -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block (PIL raises SyntaxError, struct.error, …): use the pixels as stored
        return 1


def _is_regular_file(path: str) -> bool:
    # fgvc_edge._io.is_regular_file, repeated: this module imports nothing of fgvc_edge but its errors.
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _open(path: str) -> "Image.Image":
    if not _is_regular_file(path):
        # A FIFO or device named like an image would block open() forever.
        raise UserInputError("{} {}".format(
            "not a regular file (a FIFO, socket or device):" if os.path.lexists(path) else "no such image:", path))
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except FileNotFoundError:
        raise UserInputError("no such image: {}".format(path)) from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserInputError("cannot read image {}: {}".format(path, exc)) from None


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
