"""reparameterize_model: exact (float64) and as accurate as the original (float32) for every registered model,
Conv→BN pairs found from the autograd graph (impure chains refused), replayed from checkpoints."""
import copy

import pytest
import torch
from torch import nn

from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.models import create_model, get_model_config, list_models
from fgvc_edge.models.acanet import ACCB
from fgvc_edge.transforms import reparameterize_model, reparameterize_with_report
from fgvc_edge.structure import FOLD_BN_TRANSFORM, REPARAM_TRANSFORM
from fgvc_edge.transforms.reparam import find_conv_bn_pairs

# The registry's big members (tens of seconds each on 2 cores) run this check with `make test-slow`; each family
# keeps a smaller sibling in the fast tier (resnet18, cmal/care/acanet_resnet18, cncnn_resnet50, the small RBIs).
HEAVY = {"resnet50", "cmal_resnet50", "care_resnet50", "acanet_resnet50", "rbi_densenet121", "rbi_swin_s",
         "rbi_convnext_base"}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_models()]
NUM_CLASSES = 7


def small(name):
    return get_model_config(name).min_input_size


def build(name):
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, input_size=small(name))


def randomize_batchnorm(model, seed=1):
    """Random running statistics and affine parameters (RepVGG's verify habit): a fold that drops any of
    μ, σ², γ, β or eps shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                    module.bias.copy_(torch.rand(n, generator=generator) - 0.5)


def rel_error(reference, candidate):
    reference, candidate = reference.double(), candidate.double()
    return float((candidate - reference).norm() / reference.norm())


def has_blocks(model):
    return any(callable(getattr(m, "reparameterize", None)) for m in model.modules())


@pytest.mark.parametrize("name", MODELS)
def test_reparam_and_fold_are_exact_and_reload(name, tmp_path):
    model = build(name)
    randomize_batchnorm(model)
    x = torch.randn(2, 3, small(name), small(name), generator=torch.Generator().manual_seed(2))
    # The transform itself, in float64: equal to rounding (an eps or μ slip would show at ~1e-5).
    model_64 = copy.deepcopy(model).double()
    deployed_64, report = reparameterize_with_report(model_64, fold_bn=True, example=x.double())
    with torch.no_grad():
        exact = rel_error(model_64(x.double()), deployed_64(x.double()))
    assert exact <= 1e-9, exact
    # Every BatchNorm2d model here has Conv→BN chains (ConvNeXt and Swin use LayerNorm only).
    assert bool(report.folded) == any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert bool(report.blocks) == has_blocks(model)
    # float32, as deployed: within 1e-5, or within 3× the original's own float32 error where that is larger.
    deployed = reparameterize_model(model, fold_bn=True)
    with torch.no_grad():
        reference = model(x)
        floor = rel_error(model_64(x.double()), reference)
        error = rel_error(reference, deployed(x))
    assert error <= max(1e-5, 3 * floor), (error, floor)
    names = [step["name"] for step in deployed.structure_transforms]
    assert names == [REPARAM_TRANSFORM] * bool(report.blocks) + [FOLD_BN_TRANSFORM] * bool(report.folded)
    assert not hasattr(model, "structure_transforms")  # inplace=False left the original alone
    restored = create_model(name, checkpoint=save_checkpoint(deployed, str(tmp_path / "ck")))
    with torch.no_grad():
        assert torch.equal(restored(x), deployed(x))


def test_accb_becomes_one_conv_and_is_idempotent():
    model = build("acanet_resnet18")
    randomize_batchnorm(model)
    deployed = reparameterize_model(model)
    blocks = [m for m in deployed.modules() if isinstance(m, ACCB)]
    assert len(blocks) == 8
    for block in blocks:
        assert isinstance(block.fused, nn.Conv2d) and block.fused.kernel_size == (3, 3)
        assert block.fused.bias is not None
        assert not hasattr(block, "square") and not hasattr(block, "hor") and not hasattr(block, "ver")
    again = reparameterize_model(deployed)
    assert again.structure_transforms == deployed.structure_transforms  # nothing new to record
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x), deployed(x))


class Branchy(nn.Module):
    """conv_a → bn_a (pure); conv_b → bn_b and conv_b → skip add (impure); conv_c's kernel reused by hand."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.bn_b = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.conv_c, self.bn_c = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x):
        a = self.bn_a(self.conv_a(x))
        b = self.conv_b(a)
        c = self.bn_c(self.conv_c(self.bn_b(b) + b))
        return c + torch.nn.functional.conv2d(a, self.conv_c.weight)


def test_only_pure_conv_bn_chains_are_folded():
    model = Branchy().eval()
    randomize_batchnorm(model)
    x = torch.randn(2, 3, 8, 8)
    assert find_conv_bn_pairs(model, x) == [("conv_a", "bn_a")]
    deployed = reparameterize_model(model, fold_bn=True, example=x)
    assert isinstance(deployed.bn_a, nn.Identity) and isinstance(deployed.bn_b, nn.BatchNorm2d)
    assert isinstance(deployed.bn_c, nn.BatchNorm2d)
    with torch.no_grad():
        assert rel_error(model(x), deployed(x)) <= 1e-6
