"""Atomic file output: write to a temporary file beside the target, then rename.

A failed or interrupted write never leaves a half-written file and never clobbers what was there.
Torch-free (the runtime uses it); valid on Python 3.8.
"""
import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any, Iterator

from fgvc_edge.errors import UserInputError


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success it is renamed onto ``path``."""
    target = os.path.abspath(str(path))
    folder = os.path.dirname(target)
    refuse_file_in_the_way(path, folder)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserInputError("cannot write {}: {}".format(path, exc.strerror or exc)) from None
    os.close(fd)
    # mkstemp creates 0600; give the file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def refuse_file_in_the_way(path: str, folder: str) -> None:
    """Refuse to write ``path`` when ``folder`` (where it goes) or an ancestor is a file: makedirs would say only
    "File exists" or "Not a directory"."""
    current = os.path.abspath(folder)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent
    if not os.path.isdir(current):
        raise UserInputError("cannot write {}: {} is a file, not a folder".format(path, current))


def write_json(path: str, data: Any) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")


def read_json(path: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserInputError("no such file: {}".format(path)) from None
    except (OSError, ValueError) as exc:
        raise UserInputError("cannot read {} as JSON: {}".format(path, exc)) from None


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
