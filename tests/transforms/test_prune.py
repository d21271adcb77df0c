"""prune_model on Torch-Pruning, registry-driven: 30% of the channels → same outputs shape, ≥ 20% fewer MACs,
heads and unsafe structures keep their width, checkpoint reload without the pruner, export parity, runner."""
import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.errors import UserInputError
from fgvc_edge.export import export_onnx
from fgvc_edge.models import create_model, get_model_config, list_models
from fgvc_edge.models.cncnn import InputWidthConvLSTM, LevelConvLSTM
from fgvc_edge.models.swin import ModuleWindowAttention
from fgvc_edge.runtime import OnnxRunner
from fgvc_edge.transforms import reparameterize_model
from fgvc_edge.structure import PRUNE_TRANSFORM, SWAP_TRANSFORM, _replay_prune, _replay_swaps
from fgvc_edge.transforms.prune import prune_model, swap_modules

# The registry's big members (tens of seconds each on 2 cores) run this check with `make test-slow`; each family
# keeps a smaller sibling in the fast tier (resnet18, cmal/care/acanet_resnet18, cncnn_resnet50, the small RBIs).
HEAVY = {"resnet50", "cmal_resnet50", "care_resnet50", "acanet_resnet50", "rbi_densenet121", "rbi_swin_s",
         "rbi_convnext_base"}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_models()]
NUM_CLASSES = 7
OUTPUT_WIDTHS = {"out_channels", "out_features"}


def small(name):
    return get_model_config(name).min_input_size


def build(name, **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, input_size=small(name), **kwargs)


def rel_error(reference, candidate):
    return float(np.linalg.norm(candidate - reference) / np.linalg.norm(reference))


@pytest.fixture
def no_pruner(monkeypatch):
    """Loading a pruned checkpoint must not build a dependency graph or a pruner."""

    def refuse(*args, **kwargs):
        raise AssertionError("the pruner ran during checkpoint loading")

    monkeypatch.setattr(tp.pruner, "BasePruner", refuse)
    monkeypatch.setattr(tp, "DependencyGraph", refuse)


@pytest.mark.parametrize("name", MODELS)
def test_prune_30_percent_reloads_and_exports(name, tmp_path, request):
    model = build(name)
    size = small(name)
    pruned, report = prune_model(model, ratio=0.3)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape == (2, NUM_CLASSES)
    assert report.macs_reduction >= 0.20, report.macs_reduction
    assert report.params_after < report.params_before
    assert report.changed_modules and pruned.structure_transforms[-1]["name"] == PRUNE_TRANSFORM
    # Every ignored layer (the heads first of all) kept its output width.
    changes = {c["module"]: c for c in pruned.structure_transforms[-1]["modules"]}
    for item in report.ignored:
        for module, change in changes.items():
            if module == item.name or module.startswith(item.name + "."):
                assert not OUTPUT_WIDTHS & set(change["attrs"]), (item, change)
    assert any("head" in item.reason for item in report.ignored)
    if any(callable(getattr(m, "reparameterize", None)) for m in pruned.modules()):
        pruned = reparameterize_model(pruned, fold_bn=True)  # prune, then deploy (ACCB widths follow the pruning)
    folder = save_checkpoint(pruned, str(tmp_path / "ck"))
    request.getfixturevalue("no_pruner")
    restored = create_model(name, checkpoint=folder)
    with torch.no_grad():
        assert torch.equal(restored(x), pruned(x))
    result = export_onnx(restored, str(tmp_path / "m.onnx"))
    assert result.parity.passed and result.parity.rel_error <= 1e-4
    one = x[:1].numpy()
    with OnnxRunner(result.path) as runner:
        logits = runner.infer(one)
    with torch.no_grad():
        reference = restored(x[:1]).numpy()
    assert logits.shape == (1, NUM_CLASSES)
    assert rel_error(reference, logits) <= 1e-4 and logits.argmax() == reference.argmax()


def test_importance_global_and_target_macs():
    model = build("resnet18")
    _, taylor = prune_model(model, ratio=0.3, importance="taylor")
    _, l1_global = prune_model(model, ratio=0.3, importance="l1", global_pruning=True)
    assert taylor.macs_reduction >= 0.2 and l1_global.macs_reduction > 0.0
    assert all(p.grad is None for p in model.parameters())  # Taylor's gradients were on a copy, then dropped
    target = int(0.6 * taylor.macs_before)
    pruned, searched = prune_model(model, target_macs=target)
    assert searched.macs_after <= target < searched.macs_before
    assert searched.macs_after >= 0.8 * target  # the smallest ratio that fits, not an over-pruned model
    assert 0.0 < searched.ratio < 0.95 and pruned.structure_transforms[-1]["ratio"] == searched.ratio


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "exactly one of"),
        ({"ratio": 0.3, "target_macs": 10**6}, "exactly one of"),
        ({"ratio": 1.5}, "--ratio"),
        ({"ratio": 0.3, "importance": "fisher"}, "--importance"),
        ({"target_macs": 10**12}, "already"),
        ({"target_macs": 1}, "cannot reach"),
    ],
)
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserInputError, match=message):
        prune_model(build("resnet18"), **options)


class DepthwiseNet(nn.Module):
    """A grouped conv, whose shape record needs ``groups`` (the weight shape alone cannot tell), and the
    model-side hook naming what to keep."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.depthwise(self.stem(x)).mean((2, 3)))

    def pruning_ignored_layers(self):
        return [("head", "classifier")]


def test_grouped_conv_record_replays_on_a_fresh_model():
    torch.manual_seed(0)
    model = DepthwiseNet().eval()
    x = torch.randn(2, 3, 8, 8)
    pruned, report = prune_model(model, ratio=0.5, example=x)
    assert [i.name for i in report.ignored] == ["head"]
    step = pruned.structure_transforms[-1]
    depthwise = next(c for c in step["modules"] if c["module"] == "depthwise.0")
    assert depthwise["attrs"] == {"in_channels": 16, "out_channels": 16, "groups": 16}
    fresh = DepthwiseNet().eval()
    _replay_prune(fresh, step, {})
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), pruned(x))


def test_swaps_change_nothing_but_the_class():
    # 100 px: Swin pads 25 → 28 tokens and shifts; the swap must match bit for bit there too.
    cls = ModuleWindowAttention
    model = build("rbi_swin_t")
    x = torch.randn(2, 3, 100, 100)
    with torch.no_grad():
        before = model(x)
        keys = list(model.state_dict())
        swapped = swap_modules(model)
        after = model(x)
    assert swapped and set(swapped.values()) == {cls.__name__}
    assert list(model.state_dict()) == keys and torch.equal(before, after)


def test_legacy_convlstm_swap_record_still_replays():
    # Checkpoints pruned by 0.1.0 name InputWidthConvLSTM; it must still load, and change nothing.
    model = build("cncnn_resnet50")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        _replay_swaps(model, {"name": SWAP_TRANSFORM, "modules": {"top_down": "InputWidthConvLSTM"}}, {})
        assert type(model.top_down) is InputWidthConvLSTM and torch.equal(model(x), before)
    assert "top_down" not in swap_modules(build("cncnn_resnet50"))  # no longer swapped by pruning


def test_pruned_convlstm_keeps_its_hidden_width():
    pruned, _ = prune_model(build("cncnn_resnet50"), ratio=0.3)
    cell = pruned.top_down
    assert isinstance(cell, LevelConvLSTM) and cell.gates.out_channels == 4 * 256
    assert pruned.lateral3.out_channels < 256 and cell.gates.in_channels == pruned.lateral3.out_channels + 256
