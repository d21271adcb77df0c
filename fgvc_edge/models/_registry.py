"""Model registry (torchvision's/timm's habit): small builders registered with their config as data."""
import difflib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from fgvc_edge.errors import UserInputError
from fgvc_edge.contract.preprocess import Preprocess


@dataclass(frozen=True)
class ModelConfig:
    """What a model is, as data: defaults, preprocessing, where it comes from, what the paper reports."""

    name: str
    input_size: int
    num_classes: int
    preprocess: Preprocess
    paper: str
    source: str
    # Inference variants (CMAL-Net's `raw` / `raw+aoval`); the first one is the deployment default.
    variants: Tuple[str, ...] = ()
    # Ids of rows in fgvc_edge/data/paper_figures.json that this model is compared against.
    paper_rows: Tuple[str, ...] = ()
    # True when an image's output depends on the other images of its batch (RBI).
    batch_dependent: bool = False
    # Smallest square input every block accepts (tests use it).
    min_input_size: int = 32
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def default_variant(self) -> Optional[str]:
        return self.variants[0] if self.variants else None

    def with_overrides(self, *, num_classes: Optional[int] = None, input_size: Optional[int] = None) -> "ModelConfig":
        cfg = self
        if num_classes is not None:
            cfg = replace(cfg, num_classes=num_classes)
        if input_size is not None:
            cfg = replace(cfg, input_size=input_size, preprocess=cfg.preprocess.for_input_size(input_size))
        return cfg


Builder = Callable[..., Any]
_BUILDERS: Dict[str, Builder] = {}
_CONFIGS: Dict[str, ModelConfig] = {}


def register_model(config: ModelConfig) -> Callable[[Builder], Builder]:
    """Register ``fn`` under ``config.name``; a duplicate name is an error (torchvision's rule)."""

    def decorator(fn: Builder) -> Builder:
        if config.name in _BUILDERS:
            raise ValueError("model {!r} is registered twice".format(config.name))
        _BUILDERS[config.name] = fn
        _CONFIGS[config.name] = config
        return fn

    return decorator


def list_models() -> List[str]:
    _load_model_modules()
    return sorted(_BUILDERS)


def get_model_config(name: str) -> ModelConfig:
    _load_model_modules()
    if name not in _CONFIGS:
        close = difflib.get_close_matches(name, list(_CONFIGS), n=3, cutoff=0.5)
        hint = "; did you mean {}?".format(", ".join(close)) if close else "; see `fgvc-edge models`"
        raise UserInputError("unknown model {!r}{}".format(name, hint))
    return _CONFIGS[name]


def get_builder(name: str) -> Builder:
    get_model_config(name)
    return _BUILDERS[name]


def _load_model_modules() -> None:
    # Importing the model files runs their @register_model decorators.
    from fgvc_edge.models import acanet  # noqa: F401
    from fgvc_edge.models import care  # noqa: F401
    from fgvc_edge.models import cmal  # noqa: F401
    from fgvc_edge.models import cncnn  # noqa: F401
    from fgvc_edge.models import rbi  # noqa: F401
    from fgvc_edge.models import resnet  # noqa: F401
