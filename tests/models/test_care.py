"""CARE-Net: eqs. (2)-(3), (5)-(8) by hand, the fixed λ, ablation switches, the training-only branch, C vs Table 2."""
import json
import math
import os
from collections import Counter

import onnx
import pytest
import torch
import torch.nn.functional as F

import fgvc_edge
from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.export import export_onnx
from fgvc_edge.models import create_model, get_model_config
from fgvc_edge.models.care import (
    ATTENTION_REDUCTION,
    CARE_WIDTH,
    FUSION_HIDDEN_DIVISOR,
    CareTrainOutput,
    CrossLayerGuidance,
    ReconstructionBranch,
    ScaleAdaptiveFusion,
)
from fgvc_edge.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD

SMALL = 64  # v2..v5 at 16/8/4/2 px: every pooling factor is an integer, so hand computations are exact
WIDTH = 16


def tiny(**kwargs):
    torch.manual_seed(0)
    return create_model("care_resnet18", num_classes=5, input_size=SMALL, width=WIDTH, **kwargs)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_lambda_is_a_fixed_buffer():
    model = tiny().train()
    assert "guidance.scale" in dict(model.named_buffers())
    assert "guidance.scale" in model.state_dict()
    assert all("scale" not in name for name, _ in model.named_parameters())
    assert model.guidance.scale.item() == pytest.approx(0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = model.fc.weight.detach().clone()
    model.loss(model(torch.randn(2, 3, SMALL, SMALL)), torch.tensor([0, 4])).backward()
    optimizer.step()
    assert not torch.equal(before, model.fc.weight)
    assert model.guidance.scale.item() == pytest.approx(0.2)


def test_guidance_eq3_by_hand():
    guidance = CrossLayerGuidance(4)
    attention = guidance.attention[0]
    with torch.no_grad():  # hidden width max(4 // 16, 1) = 1
        attention.reduce.weight.fill_(1.0)
        attention.reduce.bias.zero_()
        attention.expand.weight.copy_(torch.tensor([0.0, 0.2, -0.2, 1.0]).view(4, 1, 1, 1))
        attention.expand.bias.zero_()
    # A 1×1 v5 upsamples to a constant map, so GAP(ṽ5) = v5: hidden = ReLU(1 + 2 + 3 - 1) = 5.
    v5 = torch.tensor([1.0, 2.0, 3.0, -1.0]).view(1, 4, 1, 1)
    v2 = torch.randn(1, 4, 3, 3)
    out = guidance([v2, torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), v5])
    a = [1 / (1 + math.exp(-z)) for z in (0.0, 1.0, -1.0, 5.0)]
    expected = v2 * (1 + 0.2 * torch.tensor(a).view(1, 4, 1, 1))
    assert torch.allclose(out[0], expected, atol=1e-6)
    assert torch.equal(out[3], v5)  # v5' = v5


def test_fusion_weights_and_eq7():
    torch.manual_seed(0)
    fusion = ScaleAdaptiveFusion(8)
    features = [torch.randn(3, 8, s, s) for s in (8, 4, 2, 1)]
    alpha = fusion.weights(features)
    assert alpha.shape == (3, 4)
    assert (alpha > 0).all()
    assert torch.allclose(alpha.sum(1), torch.ones(3), atol=1e-6)
    # Eq. (5)-(6) by hand: MLP([mean of the four GAP vectors; GAP(v5)]).
    g = [f.mean((2, 3)) for f in features]
    assert torch.allclose(alpha, torch.softmax(fusion.mlp(torch.cat([sum(g) / 4, g[3]], 1)), 1), atol=1e-6)
    aligned = [F.interpolate(f, size=(8, 8), mode="bilinear", align_corners=False) for f in features]
    expected = sum(alpha[:, i].view(3, 1, 1, 1) * aligned[i] for i in range(4))
    assert torch.allclose(fusion(features), expected, atol=1e-6)
    with torch.no_grad():  # all weight on v4 → v_f is v4 upsampled to v2's size
        fusion.mlp[2].weight.zero_()
        fusion.mlp[2].bias.copy_(torch.tensor([0.0, 0.0, 100.0, 0.0]))
    assert torch.allclose(fusion(features), aligned[2], atol=1e-5)


def test_reconstruction_loss_by_hand():
    model = tiny().train()
    captured = {}
    model.fusion.register_forward_hook(lambda mod, args, out: captured.update(features=args[0], fused=out))
    x, y = torch.randn(2, 3, SMALL, SMALL), torch.tensor([1, 3])
    outputs = model(x)
    assert isinstance(outputs, CareTrainOutput) and outputs.recon_terms.shape == (4,)
    fused = captured["fused"]
    assert fused.shape[-1] == SMALL // 4
    for conv, target, term in zip(model.reconstruction.convs, captured["features"], outputs.recon_terms):
        k = fused.shape[-1] // target.shape[-1]
        pooled = fused.reshape(2, WIDTH, target.shape[-2], k, target.shape[-1], k).mean((3, 5))
        rebuilt = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], pooled) + conv.bias.view(1, -1, 1, 1)
        assert term.item() == pytest.approx(((rebuilt - target) ** 2).mean().item(), rel=1e-5)
    expected = F.cross_entropy(outputs.logits, y) + 0.3 * outputs.recon_terms.sum()
    assert model.loss(outputs, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert model.loss(outputs.logits, y).item() == pytest.approx(F.cross_entropy(outputs.logits, y).item())


def test_reconstruction_pools_before_the_conv():
    torch.manual_seed(0)
    branch = ReconstructionBranch(3)
    fused = torch.randn(1, 3, 4, 4)
    targets = [torch.randn(1, 3, s, s) for s in (4, 2, 1, 1)]
    for conv, target, term in zip(branch.convs, targets, branch(fused, targets)):
        rebuilt = F.adaptive_avg_pool2d(conv(fused), target.shape[-2:])  # conv first, pooled after
        assert term.item() == pytest.approx(F.mse_loss(rebuilt, target).item(), rel=1e-5)


@pytest.mark.parametrize(
    "guidance,reconstruction", [(False, False), (True, False), (True, True)], ids=["row2", "row3", "row4"]
)
def test_ablation_switches_change_the_modules(guidance, reconstruction):
    model = tiny(guidance=guidance, reconstruction=reconstruction)
    prefixes = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert prefixes == {"backbone", "lateral", "fusion", "fc"} | ({"guidance"} if guidance else set()) | (
        {"reconstruction"} if reconstruction else set()
    )
    hidden = WIDTH // ATTENTION_REDUCTION
    attention = 3 * (WIDTH * hidden + hidden + hidden * WIDTH + WIDTH)
    branch = 4 * (WIDTH * WIDTH + WIDTH)
    full = tiny()
    assert n_params(full) - n_params(model) == attention * (not guidance) + branch * (not reconstruction)
    outputs = model.train()(torch.randn(2, 3, SMALL, SMALL))
    assert outputs.recon_terms.shape == ((4,) if reconstruction else (0,))


def test_ablation_survives_a_checkpoint(tmp_path):
    model = tiny(guidance=False, reconstruction=False)
    restored = create_model("care_resnet18", checkpoint=save_checkpoint(model, str(tmp_path / "ck")))
    assert restored.guidance is None and restored.reconstruction is None
    assert restored.model_args == {"width": WIDTH, "guidance": False, "reconstruction": False}
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), restored(x))


def test_eval_forward_never_calls_the_branch():
    model = tiny()
    calls = []
    for conv in model.reconstruction.convs:
        conv.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, SMALL, SMALL))
    assert calls == []
    model.train()(torch.randn(2, 3, SMALL, SMALL))
    assert len(calls) == 4


def test_onnx_holds_nothing_of_the_branch(tmp_path):
    full = tiny()
    bare = tiny(reconstruction=False)
    bare.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("reconstruction.")})
    graphs = []
    for label, model in (("full", full), ("bare", bare)):
        result = export_onnx(model, str(tmp_path / "{}.onnx".format(label)))
        assert result.parity.passed
        graphs.append(onnx.load(result.path).graph)
        # The sidecar carries both counts: every learnable parameter, and those the graph holds.
        assert (result.record["params"], result.record["params_deploy"]) == (n_params(model), n_params(bare))
    ops = [Counter(node.op_type for node in g.node) for g in graphs]
    shapes = [sorted(tuple(init.dims) for init in g.initializer) for g in graphs]
    assert ops[0] == ops[1] and ops[0]["Conv"] > 0
    assert shapes[0] == shapes[1]
    assert full.deploy_parameters() == n_params(bare) == n_params(full) - 4 * (WIDTH * WIDTH + WIDTH)


def test_default_config():
    cfg = get_model_config("care_resnet50")
    assert (cfg.input_size, cfg.num_classes) == (224, 200)
    assert (cfg.preprocess.resize_size, cfg.preprocess.crop_size) == (256, 224)
    assert (cfg.preprocess.mean, cfg.preprocess.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert cfg.paper_rows == ("care_table2/care_resnet50",)


def test_chosen_width_is_closest_to_table2():
    path = os.path.join(os.path.dirname(fgvc_edge.__file__), "data", "paper_figures.json")
    with open(path, encoding="utf-8") as fh:
        row = json.load(fh)["rows"]["care_table2/care_resnet50"]
    assert (row["params"], row["num_classes"]) == (25.0e6, 200)
    backbone = 23_508_032  # torchvision ResNet-50 without its fc
    counts = {}
    for width in (128, 256, 512):
        model = create_model("care_resnet50", width=width)
        h, q = width // ATTENTION_REDUCTION, width // FUSION_HIDDEN_DIVISOR
        by_formula = (
            backbone
            + (256 + 512 + 1024 + 2048) * width + 4 * width  # 1×1 laterals
            + 3 * (2 * width * h + h + width)  # eq. (2), one module per guided scale
            + 2 * width * q + q + 4 * q + 4  # eq. (6) MLP
            + 4 * (width * width + width)  # eq. (8) branch
            + width * 200 + 200  # classifier
        )
        counts[width] = n_params(model)
        assert counts[width] == by_formula
    assert counts == {128: 24_106_820, 256: 24_865_148, 512: 26_861_036}
    assert min(counts, key=lambda w: abs(counts[w] - row["params"])) == CARE_WIDTH
