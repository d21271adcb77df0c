"""Read ``torch.save`` files without running any pickled code — also whole-module pickles.

``torch.load(weights_only=True)`` reads plain state dicts but refuses a whole pickled module
(``torch.save(net)``, how some official code saves its checkpoints), and its error advises
``weights_only=False``, which would import the pickled classes and run whatever the pickle names. Here both
file formats are read by one restricted unpickler (:func:`load_torch_file`):

* the zip archive of torch ≥ 1.6: ``<root>/data.pkl`` plus one raw little-endian file per storage under
  ``<root>/data/``;
* the legacy stream of torch 0.4–1.5 (what the official CN-CNN code, pinned to torch 0.4.1, writes): pickled
  magic number, protocol version and system info, the object pickle, the list of storage keys, then each
  storage as an int64 element count and its raw bytes.

``find_class`` is restricted to:

* torch's tensor rebuild functions (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``,
  ``_rebuild_parameter_with_state``), replaced by our own, which only view a storage (bounds-checked);
* typed storage names (``torch.FloatStorage`` …), used as dtype markers in persistent ids;
* ``collections.OrderedDict`` and ``builtins.set``;
* the module classes the caller allows (e.g. ``__main__.Network_Wrapper``), each mapped to an inert
  stand-in, :class:`PickledModule`, that keeps only ``_parameters`` / ``_buffers`` / ``_modules`` and
  has no behaviour.

Anything else (``os.system``, ``builtins.eval``, ``torch.load`` …) stops the load with a
:class:`~fgvc_edge.errors.UserInputError` before it is called. Every importer (official CMAL-Net and CN-CNN
checkpoints, backbone weights) reads ``.pth`` files through :func:`load_torch_file`.
"""
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Set, Tuple

import torch

from fgvc_edge.errors import UserInputError

# Layer classes of torch.nn that plain CNN checkpoints pickle; importers add their models' own classes.
TORCH_LAYER_CLASSES = frozenset(
    "torch.nn.modules." + name
    for name in (
        "container.Sequential",
        "container.ModuleList",
        "conv.Conv2d",
        "batchnorm.BatchNorm1d",
        "batchnorm.BatchNorm2d",
        "linear.Linear",
        "activation.ReLU",
        "activation.ELU",
        "pooling.MaxPool2d",
        "pooling.AdaptiveAvgPool2d",
        "pooling.AdaptiveMaxPool2d",
    )
)
TORCHVISION_RESNET_CLASSES = frozenset(
    "torchvision.models.resnet." + name for name in ("ResNet", "BasicBlock", "Bottleneck")
)

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something outside the allow-list."""


class PickledModule:
    """Stand-in for a pickled ``nn.Module``: its class name and tensors, nothing that runs.

    The unpickler creates it with ``__new__`` (no arguments) and passes the module's ``__dict__`` to
    ``__setstate__``, which keeps three entries and drops the rest (hooks, flags, hyper-parameters).
    """

    pickled_class = ""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError("{} has a non-dict state".format(self.pickled_class))
        self.tensors: Dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                if value is not None and not isinstance(value, torch.Tensor):
                    raise UnsafePickleError("{}.{} is not a tensor".format(self.pickled_class, name))
                if value is not None:
                    self.tensors[name] = value
        for name in state.get("_non_persistent_buffers_set") or ():
            self.tensors.pop(name, None)
        self.children: Dict[str, "PickledModule"] = {}
        for name, child in (state.get("_modules") or {}).items():
            if child is not None and not isinstance(child, PickledModule):
                raise UnsafePickleError("{}.{} is not a module".format(self.pickled_class, name))
            if child is not None:
                self.children[name] = child


class _StorageType:
    """What ``torch.FloatStorage`` & co. unpickle to: only a dtype for the persistent id."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(
    storage: Any, storage_offset: int, size: Any, stride: Any, requires_grad: bool = False, *_: Any
) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise UnsafePickleError("a tensor is rebuilt from something that is not a storage")
    return torch.as_strided(storage, tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset))


def _rebuild_parameter(data: Any, requires_grad: bool = False, *_: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("a parameter is rebuilt from something that is not a tensor")
    return data


_SAFE_GLOBALS: Dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "__builtin__.set": set,  # protocol-2 pickles name builtins by their Python 2 module
}


# torch/serialization.py's MAGIC_NUMBER and PROTOCOL_VERSION of the legacy (pre-1.6) format.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# (key, dtype, numel) -> the storage as a flat tensor
StorageSource = Callable[[str, torch.dtype, int], torch.Tensor]


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream: Any, module_classes: Set[str], storage: Optional[StorageSource]) -> None:
        super().__init__(stream)
        self._module_classes = module_classes
        self._stand_ins: Dict[str, type] = {}
        self._storage = storage
        self._storages: Dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        qualified = "{}.{}".format(module, name)
        if qualified in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[qualified]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if qualified in self._module_classes:
            if qualified not in self._stand_ins:
                self._stand_ins[qualified] = type(name, (PickledModule,), {"pickled_class": qualified})
            return self._stand_ins[qualified]
        raise UnsafePickleError("it references {}, which is not a tensor or an allowed module class".format(qualified))

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0] if isinstance(pid, tuple) and pid else None
        kind = kind.decode("ascii", "replace") if isinstance(kind, bytes) else kind
        # Legacy format: a module class travels with its source code, which is ignored (never compiled).
        if kind == "module" and len(pid) == 4 and isinstance(pid[1], type) and issubclass(pid[1], PickledModule):
            return pid[1]
        # ("storage", type, key, location, numel) in the zip format; legacy adds a view (key, offset, numel) or None.
        if kind != "storage" or len(pid) not in (5, 6) or not isinstance(pid[1], _StorageType) or self._storage is None:
            raise UnsafePickleError("unexpected persistent id {!r}".format(pid[:2] if isinstance(pid, tuple) else pid))
        key, numel = str(pid[2]), int(pid[4])
        if key not in self._storages:
            self._storages[key] = self._storage(key, pid[1].dtype, numel)
        storage = self._storages[key]
        if len(pid) == 6 and pid[5] is not None:
            _, offset, size = pid[5]
            if not 0 <= int(offset) <= int(offset) + int(size) <= storage.numel():
                raise UnsafePickleError("a storage view lies outside its storage")
            return storage[int(offset) : int(offset) + int(size)]
        return storage


def load_torch_file(path: str, *, module_classes: Iterable[str] = ()) -> Any:
    """Unpickle a ``torch.save`` file of either format; allowed module classes come back as :class:`PickledModule`."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserInputError("no such file: {}".format(path))
    if zipfile.is_zipfile(path):
        return load_torch_archive(path, module_classes=module_classes)
    return load_legacy_file(path, module_classes=module_classes)


def load_torch_archive(path: str, *, module_classes: Iterable[str] = ()) -> Any:
    """Unpickle a ``torch.save`` zip archive (torch ≥ 1.6)."""
    try:
        archive = zipfile.ZipFile(str(path))
    except FileNotFoundError:
        raise UserInputError("no such file: {}".format(path)) from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserInputError("{} is not a torch.save zip archive ({})".format(path, exc)) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise UserInputError("{} is not a torch.save archive: no single <root>/data.pkl".format(path))
        root = pickles[0][: -len("data.pkl")]
        if _read_optional(archive, root + "byteorder") not in (None, b"little"):
            raise UserInputError("{} was saved on a big-endian machine, which is not supported".format(path))

        def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            try:
                raw = archive.read("{}data/{}".format(root, key))
            except KeyError:
                raise UserInputError("{}: storage {} is missing from the archive".format(path, key)) from None
            return _storage_from_bytes(raw, dtype, numel, "{}: storage {}".format(path, key))

        data = io.BytesIO(archive.read(pickles[0]))
        return _unpickle(_RestrictedUnpickler(data, set(module_classes), storage), path)


def load_legacy_file(path: str, *, module_classes: Iterable[str] = ()) -> Any:
    """Unpickle a file in torch's legacy (0.4–1.5) format: storages are allocated while unpickling and
    filled from the records that follow the object pickle."""
    with open(path, "rb") as fh:
        stream = io.BytesIO(fh.read())
    try:
        magic, protocol, sys_info = (_RestrictedUnpickler(stream, set(), None).load() for _ in range(3))
    except Exception:  # any byte stream: unpickling garbage raises many types
        magic, protocol, sys_info = None, None, None
    if magic != _LEGACY_MAGIC:
        raise UserInputError("{} is not a torch.save file (neither a zip archive nor the torch 0.4-1.5 format)".format(path))
    if protocol != _LEGACY_PROTOCOL:
        raise UserInputError("{} has legacy protocol {}, expected {}".format(path, protocol, _LEGACY_PROTOCOL))
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
        raise UserInputError("{} was saved on a big-endian machine, which is not supported".format(path))
    storages: Dict[str, Tuple[torch.dtype, torch.Tensor]] = {}

    def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        storages[key] = (dtype, torch.empty(numel, dtype=dtype))
        return storages[key][1]

    result = _unpickle(_RestrictedUnpickler(stream, set(module_classes), storage), path)
    keys = _unpickle(_RestrictedUnpickler(stream, set(), None), path)
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise UserInputError("{}: the storage records do not match the tensors".format(path))
    for key in map(str, keys):
        dtype, target = storages[key]
        header = stream.read(8)
        count = struct.unpack("<q", header)[0] if len(header) == 8 else -1
        raw = stream.read(max(count, 0) * target.element_size())
        target.copy_(_storage_from_bytes(raw, dtype, target.numel(), "{}: storage {}".format(path, key)))
    return result


def _unpickle(unpickler: _RestrictedUnpickler, path: str) -> Any:
    try:
        return unpickler.load()
    except UnsafePickleError as exc:
        raise UserInputError("refusing to load {}: {}".format(path, exc)) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, RuntimeError, IndexError,
            KeyError, struct.error) as exc:
        raise UserInputError("cannot unpickle {}: {}".format(path, (str(exc).splitlines() or [type(exc).__name__])[0])) from None


def _storage_from_bytes(raw: bytes, dtype: torch.dtype, numel: int, what: str) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(raw) != numel * itemsize:
        raise UserInputError("{} holds {} bytes, expected {}".format(what, len(raw), numel * itemsize))
    if numel == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype)


def _read_optional(archive: zipfile.ZipFile, name: str) -> Optional[bytes]:
    try:
        return archive.read(name).strip()
    except KeyError:
        return None


def flat_state_dict(obj: Any, where: str) -> Dict[str, torch.Tensor]:
    """``state_dict()`` of a :class:`PickledModule` tree, or a pickled state dict as it is."""
    if isinstance(obj, PickledModule):
        state: Dict[str, torch.Tensor] = {}
        _collect(obj, "", state.__setitem__)
        return state
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    raise UserInputError("{} holds neither a module nor a state dict of tensors".format(where))


def _collect(module: PickledModule, prefix: str, put: Callable[[str, torch.Tensor], None]) -> None:
    for name, tensor in getattr(module, "tensors", {}).items():
        put(prefix + name, tensor)
    for name, child in getattr(module, "children", {}).items():
        _collect(child, prefix + name + ".", put)
