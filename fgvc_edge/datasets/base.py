"""What every reader returns, and the helpers they share. Torch-free (evaluation of artifacts uses it)."""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from fgvc_edge._io import is_regular_file
from fgvc_edge.contract.preprocess import to_rgb
from fgvc_edge.errors import UserInputError, require

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")

# (image path, class index)
Sample = Tuple[str, int]


@dataclass
class DatasetSplits:
    """A data set as lists of (path, label): ``train`` and ``test``, with the class names in label order."""

    layout: str
    root: str
    class_names: List[str]
    train: List[Sample]
    test: List[Sample]
    notes: List[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> List[Sample]:
        # The held-out split is "test" in most releases and "val" in ImageFolder trees (which we read as test).
        if name not in ("train", "test", "val"):
            raise UserInputError("split must be train or test (val is the same as test), not {!r}".format(name))
        return self.train if name == "train" else self.test

    def describe(self) -> Dict[str, Any]:
        return {
            "layout": self.layout,
            "root": self.root,
            "num_classes": self.num_classes,
            "train_images": len(self.train),
            "test_images": len(self.test),
        }


def need_file(root: str, relative: str, layout: str) -> str:
    """``root/relative``, or the one-line error a missing annotation file deserves."""
    path = os.path.join(root, relative)
    if not os.path.exists(path):
        raise UserInputError("{} data set at {}: missing {}".format(layout, root, relative))
    return path


def read_lines(path: str) -> List[str]:
    """The lines of an annotation file, which must be UTF-8 text (the releases are ASCII)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UserInputError("cannot read {}: {}".format(path, exc.strerror or exc)) from None
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserInputError("{}:{}: not UTF-8 text (byte 0x{:02x}); save the file as UTF-8".format(
            path, line, data[exc.start])) from None


def read_rows(path: str, fields: int) -> List[List[str]]:
    """Whitespace-separated rows; the last field keeps its inner spaces ("707-320", "Cessna 172")."""
    rows = []
    for number, line in enumerate(read_lines(path), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(None, fields - 1)
        if len(parts) != fields:
            raise UserInputError("{}:{}: expected {} fields, got {!r}".format(path, number, fields, line))
        rows.append(parts)
    return rows


def parse_int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserInputError("{}: {!r} is not an integer".format(where, value)) from None


def load_mat(path: str) -> Dict[str, Any]:
    """A MATLAB file as scipy reads it (structs as records, singleton dimensions squeezed)."""
    scipy_io = require("scipy.io", "toolkit")
    try:
        return scipy_io.loadmat(path, squeeze_me=True)
    except Exception as exc:  # scipy raises ValueError/MatReadError/OSError on corrupt files
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserInputError("cannot read {}: {}".format(path, reason)) from None


def mat_field(record: Any, name: str, path: str) -> Any:
    try:
        return record[name]
    except (KeyError, ValueError, IndexError):
        raise UserInputError("{} has no field {!r}".format(path, name)) from None


def is_image_file(path: str) -> bool:
    """An image by its suffix, a regular file (a FIFO named ``x.jpg`` would block a reader forever), and not an
    archive's hidden metadata (``._x.jpg`` AppleDouble files)."""
    name = os.path.basename(path)
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".") and is_regular_file(path)


def is_metadata_folder(name: str) -> bool:
    """Folders archives and operating systems add, never classes: ``__MACOSX``, ``.DS_Store``-style dot folders."""
    return name.startswith(".") or name == "__MACOSX"


def list_images(folder: str) -> List[str]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in (os.path.join(folder, name) for name in os.listdir(folder)) if is_image_file(p))


def class_index(names: Sequence[str]) -> Dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def open_image(path: str, exif_transpose: bool = False) -> Optional[Image.Image]:
    """The image as 8-bit RGB (upright by its EXIF orientation with ``exif_transpose``), or None when it is
    missing, truncated, not an image or not a regular file.

    Readers never check every file up front (CUB has 12k images); the loaders skip and count what fails here.
    """
    try:
        image = to_rgb(path, exif_transpose=exif_transpose)
    except UserInputError:
        return None
    except Exception:  # PIL raises many types on corrupt data (SyntaxError, struct.error, DecompressionBombError…)
        return None
    return image
