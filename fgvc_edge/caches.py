"""The caches the pipeline keeps in the working directory, listed and pruned (``fgvc-edge cache``).

``engines/.cache`` holds FP32 exports and FP16 conversions, ``calibration/`` the INT8 Q/DQ models; each file
is keyed by content, so deleting one costs only its rebuild. An entry is an artifact with its companions (the
``.json`` sidecar, external data: files named ``<artifact>.<suffix>``); a leftover temporary file of an
interrupted write is an entry of its own. An entry's last use is the newest modification time of its files —
a cache hit touches the sidecar (:func:`fgvc_edge.contract.sidecar.cached_record`), so pruning by age removes
what went unused. A leaf module (standard library only): listing caches must not load torch.
"""
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from fgvc_edge.errors import UserInputError

EXPORT_CACHE_DIR = os.path.join("engines", ".cache")
CALIBRATION_CACHE_DIR = "calibration"
CACHE_DIRS: Dict[str, str] = {"export": EXPORT_CACHE_DIR, "calibration": CALIBRATION_CACHE_DIR}
# Files of the checkout that live in a cache folder and are never pruned.
KEPT = frozenset({"README.md", ".gitkeep"})
DAY = 86400.0


@dataclass
class CacheEntry:
    name: str
    files: List[str]
    size: int
    last_used: float


@dataclass
class Cache:
    name: str
    folder: str
    entries: List[CacheEntry]

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def oldest(self) -> Optional[float]:
        return min((entry.last_used for entry in self.entries), default=None)

    @property
    def newest(self) -> Optional[float]:
        return max((entry.last_used for entry in self.entries), default=None)


def scan(name: str, folder: str) -> Cache:
    """The entries of one cache folder (none when it does not exist)."""
    try:
        names = sorted(n for n in os.listdir(folder) if n not in KEPT and os.path.isfile(os.path.join(folder, n)))
    except FileNotFoundError:
        names = []
    except OSError as exc:
        raise UserInputError("cannot read {}: {}".format(folder, exc.strerror or exc)) from None
    groups: Dict[str, List[str]] = {}
    for file_name in names:
        # The longest other name this one extends by ".<suffix>" owns it (x.onnx owns x.onnx.json).
        owners = [n for n in names if n != file_name and file_name.startswith(n + ".")]
        groups.setdefault(max(owners, key=len) if owners else file_name, []).append(file_name)
    entries = []
    for main, members in groups.items():
        paths = [os.path.join(folder, member) for member in members]
        stats = [os.stat(path) for path in paths]
        entries.append(CacheEntry(main, paths, sum(s.st_size for s in stats), max(s.st_mtime for s in stats)))
    return Cache(name, folder, entries)


def list_caches(root: str = ".") -> List[Cache]:
    return [scan(name, os.path.normpath(os.path.join(root, folder))) for name, folder in CACHE_DIRS.items()]


def prune_caches(
    root: str = ".",
    *,
    older_than_days: Optional[float] = None,
    everything: bool = False,
    dry_run: bool = False,
    now: Optional[float] = None,
) -> List[CacheEntry]:
    """Remove (or with ``dry_run`` only name) the entries unused for more than ``older_than_days``, or all."""
    if everything == (older_than_days is not None):
        raise UserInputError("say what to prune: --older-than DAYS or --all")
    if older_than_days is not None and older_than_days < 0:
        raise UserInputError("--older-than takes days >= 0, got {}".format(older_than_days))
    cutoff = None if everything else (now if now is not None else time.time()) - float(older_than_days or 0) * DAY
    removed = []
    for cache in list_caches(root):
        for entry in cache.entries:
            if cutoff is not None and entry.last_used >= cutoff:
                continue
            if not dry_run:
                _remove(entry)
            removed.append(entry)
    return removed


def _remove(entry: CacheEntry) -> None:
    for path in entry.files:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UserInputError("cannot remove {}: {}".format(path, exc.strerror or exc)) from None
