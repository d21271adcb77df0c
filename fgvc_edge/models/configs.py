"""What each registered model is, as data: defaults, preprocessing, source, paper rows (timm's pretrained cfgs,
torchvision's weights meta).

Torch-free, so listing models and refusing an unknown name take no deep-learning import; the builders that
turn a name into a module are registered against these entries by the model files (``register_model``), and
``tests/test_models.py`` checks every entry against the model its builder makes.
"""
import difflib
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

from fgvc_edge.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from fgvc_edge.errors import UserInputError


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


# -- the families -----------------------------------------------------------------------------------------

def _resnet(name: str, paper_rows: Tuple[str, ...]) -> ModelConfig:
    return ModelConfig(
        name=name,
        input_size=224,
        num_classes=200,
        preprocess=Preprocess(resize_size=256, crop_size=224, resize_mode="shorter_side"),
        paper="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
        source="torchvision.models.resnet (He et al., CVPR 2016), head resized to num_classes",
        paper_rows=paper_rows,
    )


CMAL_MODES = ("raw+aoval", "raw")


def _cmal(name: str, paper_rows: Tuple[str, ...]) -> ModelConfig:
    return ModelConfig(
        name=name,
        input_size=448,
        num_classes=100,  # FGVC-Aircraft, the Table 9 setting
        preprocess=Preprocess(
            resize_size=550, crop_size=448, resize_mode="exact", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
        ),
        paper="Liu et al., Learn from Each Other to Classify Better: Cross-layer Mutual Attention Learning "
        "for Fine-grained Visual Classification, Pattern Recognition 140 (2023)",
        source="our code after github.com/Dichao-Liu/CMAL (structure, CAM and region procedure)",
        variants=CMAL_MODES,
        paper_rows=paper_rows,
        # 64 px: layer4 is 2×2, so every expert still has a spatial map to threshold.
        min_input_size=64,
    )


def _care(name: str, paper_rows: Tuple[str, ...]) -> ModelConfig:
    return ModelConfig(
        name=name,
        input_size=224,
        num_classes=200,
        preprocess=Preprocess(resize_size=256, crop_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        paper="Yao & Chen, CARE-Net: Fine-Grained Image Classification via Cross-Layer Semantic Recalibration",
        source="own implementation of the paper's §3 equations (1)-(9); no official code",
        paper_rows=paper_rows,
        min_input_size=32,
    )


def _cncnn(name: str) -> ModelConfig:
    return ModelConfig(
        name=name,
        input_size=448,
        num_classes=200,
        # Official configs/config_birds.yaml + train.py: Resize((600, 600)) → CenterCrop(448), ImageNet stats.
        preprocess=Preprocess(
            resize_size=600, crop_size=448, resize_mode="exact", interpolation="bilinear",
            mean=IMAGENET_MEAN, std=IMAGENET_STD,
        ),
        paper="Guo et al., Cross-layer Navigation Convolutional Neural Network for Fine-grained Visual "
        "Classification, arXiv:2106.10920",
        source="own code after the paper's §2 and github.com/PRIS-CV/CN-CNN (MIT) model/resnet50.py; "
        "ConvLSTM over the levels (paper), not over the batch (official code)",
        min_input_size=32,
    )


def _acanet(name: str, backbone: str) -> ModelConfig:
    return ModelConfig(
        name=name,
        input_size=224,
        num_classes=200,
        preprocess=Preprocess(resize_size=256, crop_size=224, resize_mode="shorter_side"),
        paper="Tan & Xu, ACANet: A Fine-grained Image Classification Optimization Method Based on "
        "Convolution and Attention Fusion, 2023",
        source="ours (no official code); ACCB after DingXiaoH/ACNet, FCSA after LeapLabTHU/ACmix; {} layout".format(
            backbone
        ),
        # Layer4 must be at least 2×2 (input 64): on a 1×1 map the window softmax is constant and the
        # positional projection gets no gradient.
        min_input_size=64,
    )


def _rbi(backbone: str, paper_rows: Tuple[str, ...] = ()) -> ModelConfig:
    return ModelConfig(
        name="rbi_" + backbone,
        input_size=224,
        num_classes=120,  # Stanford Dogs, the dataset of the paper's parameter figures
        # "all input images are resized to 224x224 pixels": a square resize, no crop (see models/rbi.py).
        preprocess=Preprocess(
            resize_size=224, crop_size=224, resize_mode="exact", mean=IMAGENET_MEAN, std=IMAGENET_STD
        ),
        paper="Le et al., Enhancing Fine-grained Image Classification through Attentive Batch Training, "
        "arXiv 2412.19606",
        source="our implementation of eqs. 1-13 (no official code); backbone torchvision.models.{}".format(backbone),
        paper_rows=paper_rows,
        batch_dependent=True,
        min_input_size=32,
    )


CONFIGS: Dict[str, ModelConfig] = {
    cfg.name: cfg
    for cfg in (
        _resnet("resnet18", ("care_table2/resnet18",)),
        _resnet("resnet50", ("cmal_table9/resnet50", "care_table2/resnet50")),
        _cmal("cmal_resnet50", ("cmal_table9/cmal_resnet50_raw", "cmal_table9/cmal_resnet50_raw_aoval")),
        _cmal("cmal_resnet18", ()),
        _care("care_resnet50", ("care_table2/care_resnet50",)),
        _care("care_resnet18", ()),
        _cncnn("cncnn_resnet50"),
        _acanet("acanet_resnet18", "ResNet-18 (the paper's backbone)"),
        _acanet("acanet_resnet50", "ResNet-50 bottleneck"),
        _rbi("densenet121"),
        _rbi("mobilenet_v3_large"),
        _rbi("convnext_tiny"),
        _rbi("swin_t"),
        _rbi("swin_s", ("rbi_text/rbi_swin_s",)),
        _rbi("convnext_base", ("rbi_text/rbi_convnext_base",)),
    )
}


def list_models() -> List[str]:
    return sorted(CONFIGS)


def get_model_config(name: str) -> ModelConfig:
    """The config of ``name``; an unknown name is a one-line error with the closest names."""
    if name not in CONFIGS:
        close = difflib.get_close_matches(name, list(CONFIGS), n=3, cutoff=0.5)
        hint = "; did you mean {}?".format(", ".join(close)) if close else "; see `fgvc-edge models`"
        raise UserInputError("unknown model {!r}{}".format(name, hint))
    return CONFIGS[name]


def variant_kwargs(name: str, mode: Optional[str]) -> Dict[str, str]:
    """The builder argument selecting variant ``mode`` (``--mode``) of ``name``; ``{}`` when none is asked for.

    Checks the name too, from the configs alone: a typo fails before any deep-learning import."""
    config = get_model_config(name)
    if mode is None:
        return {}
    if not config.variants:
        raise UserInputError("{} has no modes; drop --mode".format(name))
    if mode not in config.variants:
        raise UserInputError("{} has modes {}, not {!r}".format(name, ", ".join(config.variants), mode))
    return {"mode": mode}
