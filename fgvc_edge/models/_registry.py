"""Model registry (torchvision's/timm's habit): small builders, registered by name against their config.

The configs are data (:mod:`fgvc_edge.models.configs`, torch-free); the builders live in the model files,
imported on the first request for one.
"""
from typing import Any, Callable, Dict

from fgvc_edge.errors import FgvcError
from fgvc_edge.models.configs import get_model_config

Builder = Callable[..., Any]
_BUILDERS: Dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register ``fn`` as the builder of ``name``, which must have a config; a duplicate name is an error
    (torchvision's rule)."""

    def decorator(fn: Builder) -> Builder:
        get_model_config(name)
        if name in _BUILDERS:
            raise ValueError("model {!r} is registered twice".format(name))
        _BUILDERS[name] = fn
        return fn

    return decorator


def registered_builders() -> Dict[str, Builder]:
    """Every builder, by name (imports the model files)."""
    _load_model_modules()
    return dict(_BUILDERS)


def get_builder(name: str) -> Builder:
    get_model_config(name)
    _load_model_modules()
    if name not in _BUILDERS:
        raise FgvcError("model {!r} has a config but no builder; register one with @register_model".format(name))
    return _BUILDERS[name]


def _load_model_modules() -> None:
    # Importing the model files runs their @register_model decorators.
    from fgvc_edge.models import acanet  # noqa: F401
    from fgvc_edge.models import care  # noqa: F401
    from fgvc_edge.models import cmal  # noqa: F401
    from fgvc_edge.models import cncnn  # noqa: F401
    from fgvc_edge.models import rbi  # noqa: F401
    from fgvc_edge.models import resnet  # noqa: F401
