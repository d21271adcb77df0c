"""Model zoo: the configs (data, torch-free) and the registry; ``create_model`` and the model classes need torch.

``list_models`` / ``get_model_config`` import no deep-learning library, so listing models and refusing a bad
name are instant; ``create_model`` and ``FgvcModel`` load torch on first use (PEP 562 module ``__getattr__``).
"""
import importlib
from typing import Any

from fgvc_edge.errors import require
from fgvc_edge.models._registry import register_model
from fgvc_edge.models.configs import ModelConfig, get_model_config, list_models

__all__ = ["FgvcModel", "ModelConfig", "create_model", "get_model_config", "list_models", "register_model"]

_NEEDS_TORCH = {"create_model": "fgvc_edge.models.factory", "FgvcModel": "fgvc_edge.models.base"}


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_TORCH:
        raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
    require("torch", "toolkit")
    return getattr(importlib.import_module(_NEEDS_TORCH[name]), name)
