"""Calibration images: chosen from a folder, streamed one batch at a time through the runner's Preprocess.

Only the current batch is ever in memory; the image list is checked (count, readability) before any
model runs, so a bad folder fails in a second with one line instead of minutes into a calibration.
"""
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
from PIL import Image

from fgvc_edge._io import is_regular_file
from fgvc_edge.contract.preprocess import ImageLike, Preprocess
from fgvc_edge.errors import UserInputError
from fgvc_edge.runtime.images import IMAGE_SUFFIXES

# Below this many images the activation ranges are dominated by single images; refuse rather than
# produce an INT8 model whose accuracy depends on which 3 images happened to be there.
MIN_CALIBRATION_IMAGES = 8


def find_images(folder: str) -> List[str]:
    """Every image file under ``folder`` (recursively: an ImageFolder tree works), sorted."""
    if not os.path.isdir(folder):
        raise UserInputError("calibration data {} is not a folder".format(folder))
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        # Only regular files: a FIFO named like an image would block the reader forever.
        paths = (os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES))
        found.extend(path for path in paths if is_regular_file(path))
    return found


def select_images(folder: str, count: int) -> List[str]:
    """``count`` images spread evenly over the sorted list, so every class folder contributes.

    Refuses (one line) when fewer than MIN_CALIBRATION_IMAGES are found or any chosen file is unreadable.
    """
    if count < MIN_CALIBRATION_IMAGES:
        raise UserInputError("--calib-images must be >= {}, got {}".format(MIN_CALIBRATION_IMAGES, count))
    images = find_images(folder)
    if len(images) < MIN_CALIBRATION_IMAGES:
        raise UserInputError(
            "{} holds {} image(s); calibration needs at least {}".format(folder, len(images), MIN_CALIBRATION_IMAGES)
        )
    if len(images) > count:
        picks = np.linspace(0, len(images) - 1, count).round().astype(int)
        images = [images[i] for i in picks]
    bad = [path for path in images if not _readable(path)]
    if bad:
        raise UserInputError(
            "{} of {} calibration images cannot be read, e.g. {}".format(len(bad), len(images), bad[0])
        )
    return images


def _readable(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        return False


# scikit-image's bundled photographs (in the wheel, no download): real image statistics for INT8 speed and
# FP32-vs-INT8 agreement figures where no data set is given. Charts, blobs and binary masks are left out.
SAMPLE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png",
    "retina.jpg", "rocket.jpg", "page.png", "text.png", "cell.png", "microaneurysms.png", "clock_motion.png",
)


def sample_photos() -> List[str]:
    """Paths of scikit-image's bundled photographs present in this install; [] without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return []
    folder = os.path.dirname(data.__file__)
    return [path for path in (os.path.join(folder, name) for name in SAMPLE_PHOTOS) if _readable(path)]


class SyntheticImages(Sequence[np.ndarray]):
    """``count`` smooth random RGB images, generated on access (nothing is stored).

    Low-resolution noise upsampled bilinearly: spatially correlated like photographs, unlike white noise,
    so activation ranges are plausible. Good for speed figures only — never for accuracy.
    """

    def __init__(self, count: int, size: int, seed: int = 0) -> None:
        self.count, self.size, self.seed = int(count), int(size), int(seed)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(coarse, "RGB").resize((self.size, self.size), Image.BILINEAR))

    def describe(self) -> Dict[str, Any]:
        return {"synthetic": True, "count": self.count, "size": self.size, "seed": self.seed}


class ImageStream:
    """An onnxruntime ``CalibrationDataReader``: yields ``{input: N×3×H×W}`` batches, preprocessed on demand.

    ``__len__`` and ``set_range`` let ``quantize_static`` collect in strides (``CalibStridedMinMax``):
    each stride's activations are reduced to ranges/histograms and dropped before the next one.
    """

    def __init__(
        self,
        images: Sequence[ImageLike],
        preprocess: Preprocess,
        input_name: str,
        batch: int = 1,
        on_batch: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.images = images
        self.preprocess = preprocess
        self.input_name = input_name
        self.batch = int(batch)
        self.on_batch = on_batch
        self._start, self._end = 0, len(self)
        self._iter: Optional[Iterator[int]] = None

    def __len__(self) -> int:
        # A fixed-batch graph takes only full batches; a remainder would be padding, not data.
        return len(self.images) // self.batch

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self))
        self._iter = None

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._iter is None:
            self._iter = iter(range(self._start, self._end))
        index = next(self._iter, None)
        if index is None:
            return None
        chunk = [self.images[i] for i in range(index * self.batch, (index + 1) * self.batch)]
        array = self.preprocess.batch(chunk)
        if self.on_batch is not None:
            self.on_batch(self.batch)
        return {self.input_name: array}
