"""TensorRT timing cache: attach one from a file, and merge what a build measured back into it.

As Polygraphy's EngineBytesFromNetwork does: ``set_timing_cache`` returns False for a cache made by another
GPU or TensorRT version (with ``ignore_mismatch=False``, which we keep so foreign timings are never
trusted); we say so and build with a fresh cache. After the build, under a file lock (two builds may share
one cache), the file's current content is combined into the config's cache and the result is written
atomically. A rejected file is replaced by the fresh cache instead of being merged (Polygraphy combines
with ``ignore_mismatch=True``; we do not mix timings from another device into ours).
"""
import logging
import os
from typing import Any, Optional

from fgvc_edge._io import atomic_path
from fgvc_edge.errors import FgvcError

log = logging.getLogger(__name__)


def _read(path: Optional[str]) -> bytes:
    if path and os.path.isfile(path):
        with open(path, "rb") as fh:
            return fh.read()
    return b""


def attach_timing_cache(config: Any, path: Optional[str], trt_version: str) -> bool:
    """Attach the cache in ``path`` (or an empty one); False when TensorRT rejected the file's cache."""
    data = _read(path)
    if config.set_timing_cache(config.create_timing_cache(data), False):
        return True
    if not data:
        raise FgvcError("TensorRT {} refused an empty timing cache".format(trt_version))
    log.warning("timing cache %s was made by another GPU or TensorRT version; building with a fresh one "
                "(the file is replaced after the build)", path)
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        raise FgvcError("TensorRT {} refused an empty timing cache".format(trt_version))
    return False


def save_timing_cache(config: Any, path: str, merge: bool) -> None:
    """Write the config's cache to ``path``, combined with the file's current cache when ``merge``."""
    from filelock import FileLock

    cache = config.get_timing_cache()
    with FileLock(path + ".lock"):
        current = _read(path)
        if merge and current:
            if not cache.combine(config.create_timing_cache(current), False):
                log.warning("timing cache %s changed to another GPU or TensorRT version during the build; "
                            "replacing it", path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(memoryview(cache.serialize()))
