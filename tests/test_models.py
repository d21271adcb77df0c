"""Registry-driven checks: every registered model gets every one of them, without anyone adding it."""
import numpy as np
import pytest
import torch

from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.errors import UserInputError
from fgvc_edge.export import export_onnx
from fgvc_edge.models import create_model, get_model_config, list_models
from fgvc_edge.runtime import OnnxRunner

# Big backbones whose every check costs tens of seconds on 2 cores: their smaller siblings (same torchvision
# classes, same heads, same RBI head) stay in the fast tier; these run with `make test-slow`.
SLOW_MODELS = {"rbi_swin_s", "rbi_convnext_base", "resnet50", "cmal_resnet50", "care_resnet50", "acanet_resnet50",
               "rbi_densenet121"}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in list_models()]
NUM_CLASSES = 7


def small(name: str) -> int:
    """The smallest input every block of ``name`` accepts, so the checks stay fast on 2 cores."""
    return get_model_config(name).min_input_size


def variants(name):
    return get_model_config(name).variants or (None,)


def build(name, variant=None, **kw):
    kwargs = {"mode": variant} if variant else {}
    return create_model(name, num_classes=NUM_CLASSES, input_size=small(name), **kwargs, **kw)


@pytest.mark.parametrize("name", MODELS)
def test_eval_forward_returns_logits(name):
    torch.manual_seed(0)
    model = build(name)
    x = torch.randn(2, 3, small(name), small(name))
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_train_loss_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build(name).train()
    x = torch.randn(2, 3, small(name), small(name))
    y = torch.tensor([0, NUM_CLASSES - 1])
    loss = model.loss(model(x), y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, "parameters without a gradient: {}".format(missing[:5])
    zero = [n for n, p in model.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0]
    assert not zero, "parameters with an all-zero gradient: {}".format(zero[:5])


def test_every_config_has_a_builder_and_every_builder_a_config():
    from fgvc_edge.models._registry import registered_builders

    assert sorted(registered_builders()) == list_models()


@pytest.mark.parametrize("name", MODELS)
def test_config_matches_the_model_its_builder_makes(name, tiny):
    """The configs are data (fgvc_edge/models/configs.py): each must describe what its builder really makes."""
    cfg = get_model_config(name)
    torch.manual_seed(0)
    model = tiny.perturb_like_trained(create_model(name, input_size=cfg.min_input_size))
    assert model.variant == cfg.default_variant
    for variant in cfg.variants:
        assert create_model(name, mode=variant, input_size=cfg.min_input_size).variant == variant
    x = torch.randn(2, 3, cfg.min_input_size, cfg.min_input_size)
    with torch.no_grad():
        pair, alone = model(x), model(x[:1])
    assert pair.shape == (2, cfg.num_classes)  # the default head has the config's class count
    if not cfg.batch_dependent:  # runners chunk and pad such models: an image's output must not see its batch
        assert torch.allclose(pair[:1], alone, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserInputError, match="needs an input size"):
        create_model(name, input_size=cfg.min_input_size - 1)


@pytest.mark.parametrize("name", MODELS)
def test_config_is_consistent(name):
    cfg = get_model_config(name)
    model = create_model(name)
    assert model.config.num_classes == cfg.num_classes
    assert model.config.input_size == cfg.input_size
    assert cfg.preprocess.crop_size == cfg.input_size
    assert cfg.min_input_size <= cfg.input_size


@pytest.mark.parametrize(
    "name,variant",
    [
        pytest.param(n, v, marks=pytest.mark.slow) if n in SLOW_MODELS else (n, v)
        for n in list_models()
        for v in variants(n)
    ],
)
def test_export_parity_and_runner(name, variant, tmp_path):
    torch.manual_seed(0)
    model = build(name, variant)
    result = export_onnx(model, str(tmp_path / "m.onnx"))
    assert result.parity.passed
    assert result.parity.rel_error <= 1e-4
    x = np.random.default_rng(0).standard_normal((1, 3, small(name), small(name))).astype(np.float32)
    with OnnxRunner(result.path) as runner:
        ort = runner.infer(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert ort.shape == (1, NUM_CLASSES)
    assert np.linalg.norm(ort - ref) / np.linalg.norm(ref) <= 1e-4
    assert ort.argmax() == ref.argmax()


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = build(name)
    with torch.no_grad():  # random BN statistics, so a lost buffer shows
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    names = ["class_{}".format(i) for i in range(NUM_CLASSES)]
    folder = save_checkpoint(model, str(tmp_path / "ck"), class_names=names)
    restored = create_model(name, checkpoint=folder)
    assert restored.class_names == names
    assert restored.config.input_size == small(name)
    x = torch.randn(2, 3, small(name), small(name))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), restored(x))
