"""Which files are images: what ``predict`` expands a folder or a glob to, and what calibration reads.
Valid on Python 3.8."""
import glob
import os
from typing import Iterable, List

from fgvc_edge.errors import UserInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_GLOB_CHARS = ("*", "?", "[")


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(path)


def expand_image_paths(paths: Iterable[str]) -> List[str]:
    """Each path as given, a folder as the image files directly inside it (sorted), a quoted glob such as
    ``'birds/*.jpg'`` as its matching image files (sorted); a folder or glob that yields none is refused."""
    expanded: List[str] = []
    for path in (str(p) for p in paths):
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path))
            where = "folder {}".format(path)
        elif not os.path.exists(path) and any(ch in path for ch in _GLOB_CHARS):
            found = sorted(glob.glob(path))
            where = "pattern {}".format(path)
        else:
            expanded.append(path)  # a missing file is reported when it is read, with the reader's message
            continue
        images = [name for name in found if is_image_file(name)]
        if not images:
            raise UserInputError("{} holds no image files ({})".format(where, ", ".join(IMAGE_SUFFIXES)))
        expanded.extend(images)
    return expanded
