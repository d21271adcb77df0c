"""Atomic output: files and folders are written under a temporary name beside the target, then renamed.

A failed or interrupted write never leaves a half-written file and never clobbers what was there:

- :func:`atomic_paths` writes several files (an artifact and its sidecar) and renames them in the order
  given, only once every one is complete;
- :func:`atomic_dir` writes a whole folder (a checkpoint) beside the target and swaps it in: with Linux's
  ``renameat2(RENAME_EXCHANGE)`` in one step, elsewhere with two renames that the next write undoes if a
  crash fell between them — the previous folder survives until the new one is complete.

Temporary names carry the writer's PID (``.<name>.<pid>.<random>.tmp`` beside the target,
``<prefix><pid>-<random>`` under ``$TMPDIR``), so a later write of the same target removes what a killed run
left: entries older than this process whose PID is no longer alive. Written files get the mode any file the
user creates gets (``0666 & ~umask``), whatever the writing library did.

Torch-free (the runtime uses it); valid on Python 3.8.
"""
import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from typing import Any, Iterator, List, Optional, Sequence

from fgvc_edge.errors import UserInputError

log = logging.getLogger(__name__)

# Leftovers are only removed when older than this process (a live writer's files are never touched).
_STARTED = time.time()
_TEMP_SUFFIX = ".tmp"
_OLD_SUFFIX = ".old"


def _mode(base: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return False
    return True


def _stale(path: str, pid: int) -> bool:
    if pid == os.getpid() or pid_alive(pid):
        return False
    try:
        return os.lstat(path).st_mtime < _STARTED
    except OSError:
        return False


def _owner(name: str, prefix: str, pattern: str) -> Optional[int]:
    if not name.startswith(prefix):
        return None
    match = re.match(pattern, name[len(prefix):])
    return int(match.group(1)) if match else None


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        log.info("removed %s, left by an interrupted run", path)
    except OSError:
        pass  # another process got there first, or we may not: either way not ours to fail on


def remove_stale(folder: str, prefix: str, pattern: str = r"^(\d+)\.[A-Za-z0-9_]+\.tmp$") -> List[str]:
    """Remove entries of ``folder`` named ``prefix`` + ``pattern`` (group 1: the PID) left by dead processes."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        pid = _owner(name, prefix, pattern)
        path = os.path.join(folder, name)
        if pid is not None and _stale(path, pid):
            _remove(path)
            removed.append(path)
    return removed


def _hidden_prefix(target: str) -> str:
    return "." + os.path.basename(target) + "."


def _new_temp(target: str) -> str:
    folder = os.path.dirname(target)
    refuse_file_in_the_way(target, folder)
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale(folder, _hidden_prefix(target))
        fd, tmp = tempfile.mkstemp(prefix="{}{}.".format(_hidden_prefix(target), os.getpid()), suffix=_TEMP_SUFFIX,
                                   dir=folder)
    except OSError as exc:
        raise UserInputError("cannot write {}: {}".format(target, exc.strerror or exc)) from None
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str]) -> Iterator[List[str]]:
    """Yield one temporary path per target; when the block succeeds they are renamed onto the targets in
    the order given (each rename is atomic), else removed."""
    targets = [os.path.abspath(str(p)) for p in paths]
    temps: List[str] = []
    try:
        for target in targets:
            temps.append(_new_temp(target))
        yield temps
        mode = _mode(0o666)
        for tmp in temps:
            # Some writers replace the file they are given (safetensors: mode 0600); give it a plain file's mode.
            os.chmod(tmp, mode)
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            if os.path.lexists(tmp):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success it is renamed onto ``path``."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


# -- folders -----------------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def recover_dir(folder: str) -> Optional[str]:
    """Put back the previous ``folder`` that a crash between the two renames of a swap left aside."""
    folder = os.path.abspath(str(folder))
    parent = os.path.dirname(folder)
    if os.path.lexists(folder):
        return None
    pattern = r"^(\d+)\.[A-Za-z0-9_]+\.old$"
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return None
    for name in names:
        pid = _owner(name, _hidden_prefix(folder), pattern)
        aside = os.path.join(parent, name)
        if pid is not None and not pid_alive(pid) and os.path.isdir(aside):
            os.rename(aside, folder)
            log.warning("restored %s, which an interrupted write had left as %s", folder, aside)
            return folder
    return None


@contextlib.contextmanager
def atomic_dir(folder: str) -> Iterator[str]:
    """Yield an empty temporary folder beside ``folder``; when the block succeeds it replaces ``folder``."""
    target = os.path.abspath(str(folder))
    parent = os.path.dirname(target)
    prefix = _hidden_prefix(target)
    try:
        os.makedirs(parent, exist_ok=True)
        recover_dir(target)
        remove_stale(parent, prefix)
        remove_stale(parent, prefix, r"^(\d+)\.[A-Za-z0-9_]+\.old$")
        tmp = tempfile.mkdtemp(prefix="{}{}.".format(prefix, os.getpid()), suffix=_TEMP_SUFFIX, dir=parent)
    except OSError as exc:
        raise UserInputError("cannot write {}: {}".format(folder, exc.strerror or exc)) from None
    os.chmod(tmp, _mode(0o777))
    try:
        yield tmp
        _swap_in(tmp, target)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: str, target: str) -> None:
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous folder
        return
    aside = tmp[: -len(_TEMP_SUFFIX)] + _OLD_SUFFIX
    os.rename(target, aside)
    os.rename(tmp, target)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def private_tempdir(prefix: str) -> Iterator[str]:
    """A temporary folder under $TMPDIR named ``<prefix><pid>-…``; leftovers of killed runs are removed first."""
    root = tempfile.gettempdir()
    remove_stale(root, prefix, r"^(\d+)-[A-Za-z0-9_]+$")
    with tempfile.TemporaryDirectory(prefix="{}{}-".format(prefix, os.getpid())) as tmp:
        yield tmp


# -- checks before work -------------------------------------------------------------------------------------


def check_output_file(path: str, *companions: str) -> None:
    """Refuse, before any work, an output that cannot be written: a folder in its place (or in a companion
    file's place, e.g. its sidecar), or a folder that cannot be created or written."""
    for candidate in (path,) + companions:
        if os.path.isdir(str(candidate)):
            raise UserInputError("output {} is a folder; give another path or remove the folder".format(candidate))
    check_output_dir(os.path.dirname(os.path.abspath(str(path))), output=str(path))


def check_output_dir(folder: str, output: Optional[str] = None) -> None:
    """Refuse a folder that is not one, or that this process cannot create or write into (probed with a
    temporary file in it, or in its nearest existing parent: permission bits do not tell root or a read-only
    mount). The refusal names ``output`` (the file to be written there), else the folder."""
    folder = os.path.abspath(str(folder))
    output = output or folder
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserInputError("cannot write {}: {} is a file, not a folder".format(output, existing))
    try:
        fd, probe = tempfile.mkstemp(prefix=".fgvc-probe.{}.".format(os.getpid()), suffix=_TEMP_SUFFIX, dir=existing)
    except OSError as exc:
        raise UserInputError("cannot write {}: {}".format(output, exc.strerror or exc)) from None
    os.close(fd)
    os.unlink(probe)


def is_regular_file(path: str) -> bool:
    """True for a regular file (or a link to one): never a FIFO, socket or device, whose open() may block."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


# -- reading and writing ------------------------------------------------------------------------------------


def dump_json(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` (no rename: for temporary paths)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")


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
        dump_json(tmp, data)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` with a plain ``open()`` (so a full disk is an OSError with its errno)."""
    with open(path, "wb") as fh:
        fh.write(data)


def read_json(path: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserInputError("no such file: {}".format(path)) from None
    except IsADirectoryError:
        raise UserInputError("{} is a folder, not a JSON file".format(path)) from None
    except (OSError, ValueError) as exc:
        raise UserInputError("cannot read {} as JSON: {}".format(path, exc)) from None


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
