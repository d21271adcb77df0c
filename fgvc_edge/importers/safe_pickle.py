"""Read ``torch.save`` archives without running any pickled code — also whole-module pickles.

``torch.load(weights_only=True)`` reads plain state dicts but refuses a whole pickled module
(``torch.save(net)``, how some official code saves its checkpoints); ``weights_only=False`` would import
the pickled classes and run whatever the pickle names. Here the archive (torch's zip format, torch ≥ 1.6:
``<root>/data.pkl`` plus one raw little-endian file per storage under ``<root>/data/``) is unpickled with
``find_class`` restricted to:

* torch's tensor rebuild functions (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``,
  ``_rebuild_parameter_with_state``), replaced by our own, which only view a storage (bounds-checked);
* typed storage names (``torch.FloatStorage`` …), used as dtype markers in persistent ids;
* ``collections.OrderedDict`` and ``builtins.set``;
* the module classes the caller allows (e.g. ``__main__.Network_Wrapper``), each mapped to an inert
  stand-in, :class:`PickledModule`, that keeps only ``_parameters`` / ``_buffers`` / ``_modules`` and
  has no behaviour.

Anything else (``os.system``, ``builtins.eval``, ``torch.load`` …) stops the load with a
:class:`~fgvc_edge.errors.UserInputError` before it is called. Importers for official checkpoints reuse
:func:`load_torch_archive` and :func:`flat_state_dict`.
"""
import io
import pickle
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Set

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


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, module_classes: Set[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._root = root
        self._module_classes = module_classes
        self._stand_ins: Dict[str, type] = {}
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

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError("unexpected persistent id {!r}".format(pid[:2] if isinstance(pid, tuple) else pid))
        _, kind, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, kind.dtype, int(numel))
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        try:
            raw = self._archive.read("{}data/{}".format(self._root, key))
        except KeyError:
            raise UserInputError("storage {} is missing from the archive".format(key)) from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise UserInputError("storage {} holds {} bytes, expected {}".format(key, len(raw), numel * itemsize))
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype)


def load_torch_archive(path: str, *, module_classes: Iterable[str] = ()) -> Any:
    """Unpickle a ``torch.save`` zip archive; allowed module classes come back as :class:`PickledModule`."""
    try:
        archive = zipfile.ZipFile(str(path))
    except FileNotFoundError:
        raise UserInputError("no such file: {}".format(path)) from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserInputError(
            "{} is not a torch.save zip archive ({}); the pre-1.6 legacy format is not supported".format(path, exc)
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise UserInputError("{} is not a torch.save archive: no single <root>/data.pkl".format(path))
        root = pickles[0][: -len("data.pkl")]
        if _read_optional(archive, root + "byteorder") not in (None, b"little"):
            raise UserInputError("{} was saved on a big-endian machine, which is not supported".format(path))
        unpickler = _RestrictedUnpickler(archive.read(pickles[0]), archive, root, set(module_classes))
        try:
            return unpickler.load()
        except UnsafePickleError as exc:
            raise UserInputError("refusing to load {}: {}".format(path, exc)) from None
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
            raise UserInputError("cannot unpickle {}: {}".format(path, str(exc).splitlines()[0])) from None


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
