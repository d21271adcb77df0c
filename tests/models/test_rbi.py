"""RBI: RPE (eqs. 1-2), RRA (eqs. 3-13) against a literal reading of the equations, batch semantics, export."""
import copy
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torchvision import models as tv_models

from fgvc_edge.bench.papers import paper_row
from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.errors import UserInputError
from fgvc_edge.export import export_onnx
from fgvc_edge.models import create_model, get_model_config
from fgvc_edge.models.complexity import count_params
from fgvc_edge.models.rbi import PSNR_EPS, ResidualRelationshipAttention, relationship_position_encoding
from fgvc_edge.runtime import OnnxRunner
from fgvc_edge.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

BACKBONES = ("densenet121", "mobilenet_v3_large", "convnext_tiny", "swin_t", "swin_s", "convnext_base")
SIZE = 32
CHEAP = "rbi_mobilenet_v3_large"


def normalise(pixels: torch.Tensor, name: str = CHEAP) -> torch.Tensor:
    pre = get_model_config(name).preprocess
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


@pytest.fixture(scope="module")
def model():
    """A cheap RBI with random BN statistics, so its embeddings are not near zero in eval mode."""
    torch.manual_seed(0)
    net = create_model(CHEAP, num_classes=5, input_size=SIZE)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# -- RPE --------------------------------------------------------------------------------------------


def test_rpe_is_psnr_with_max_one_and_finite_on_the_diagonal():
    pixels = torch.stack([torch.zeros(3, 8, 8), torch.full((3, 8, 8), 0.5), torch.rand(3, 8, 8)])
    s = relationship_position_encoding(pixels)
    self_similarity = 20 * math.log10(1 / PSNR_EPS)  # MSE 0: only ε keeps it finite (48.13 dB)
    assert torch.equal(torch.diagonal(s), torch.full((3,), self_similarity, dtype=s.dtype))
    assert torch.equal(s, s.t())
    assert s[0, 1].item() == pytest.approx(20 * math.log10(1 / (0.5 + PSNR_EPS)), rel=1e-6)  # ≈ 5.95 dB
    a, c = pixels[0].double().numpy(), pixels[2].double().numpy()
    expected = 20 * np.log10(1 / (np.sqrt(np.mean((a - c) ** 2)) + PSNR_EPS))
    assert s[0, 2].item() == pytest.approx(expected, rel=1e-6)


def test_model_unnormalises_its_input_and_clips_to_unit_range(model):
    pixels = images(3, seed=1)
    assert torch.allclose(model.relations(normalise(pixels)), relationship_position_encoding(pixels), atol=1e-4)
    overexposed = pixels.clone()
    overexposed[0] = 1.7  # not an image Preprocess can produce: read as white, so MAX = 1 still holds
    clipped = pixels.clone()
    clipped[0] = 1.0
    assert torch.allclose(model.relations(normalise(overexposed)), relationship_position_encoding(clipped), atol=1e-4)


def test_unnormalisation_follows_the_models_own_preprocess(model, monkeypatch):
    """A checkpoint with other mean/std replaces model.config.preprocess; RPE must use those."""
    pixels = images(2, seed=8)
    identity = replace(model.config.preprocess, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    monkeypatch.setattr(model, "config", replace(model.config, preprocess=identity))
    assert torch.equal(model.relations(pixels), relationship_position_encoding(pixels))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_config(backbone):
    cfg = get_model_config("rbi_" + backbone)
    assert cfg.batch_dependent and cfg.num_classes == 120 and cfg.input_size == 224
    # "all input images are resized to 224x224 pixels": square, nothing cropped.
    assert (cfg.preprocess.resize_size, cfg.preprocess.crop_size, cfg.preprocess.resize_mode) == (224, 224, "exact")
    assert (cfg.preprocess.mean, cfg.preprocess.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_square_resize_keeps_the_whole_image_and_old_checkpoints_keep_theirs(model, tmp_path):
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, :30] = 255  # a white band at the left edge, which a centre crop would cut off
    square = get_model_config(CHEAP).preprocess(wide)
    assert square.shape == (3, 224, 224) and square[:, :, :20].min() > 2.0  # white after ImageNet normalisation
    before = Preprocess(resize_size=256, crop_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)  # the old default
    old = copy.deepcopy(model)
    old.config = replace(old.config, preprocess=before.for_input_size(SIZE))
    save_checkpoint(old, str(tmp_path / "old"))
    assert create_model(CHEAP, checkpoint=str(tmp_path / "old")).config.preprocess == before.for_input_size(SIZE)


def test_non_positive_eps_is_refused():
    with pytest.raises(UserInputError, match="psnr_eps"):
        create_model(CHEAP, input_size=SIZE, psnr_eps=0.0)


# -- RRA against the equations written out with B×B×D tensors ----------------------------------------


def literal_rra(rra: ResidualRelationshipAttention, n: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    b, d = n.shape
    keys = rra.key(n).unsqueeze(0).expand(b, b, d)  # eqs. 3, 7: D_v, entry [i, j] = k_j
    queries = rra.query(n).unsqueeze(1).expand(b, b, d)  # eqs. 4, 8: D_h, entry [i, j] = q_i
    values = rra.value(n).unsqueeze(1).expand(b, b, d)  # eq. 9
    s3 = s.unsqueeze(2)
    depth_sum = (queries * (keys + s3) / math.sqrt(d)).sum(dim=2)  # eq. 5 inside eq. 10
    attn = torch.softmax(depth_sum, dim=0)  # our reading: normalised over i, the index eq. 11 sums
    z = (attn.unsqueeze(2) * (values + s3)).sum(dim=0)  # eq. 6 inside eq. 11
    r = rra.skip(n)
    beta = torch.sigmoid(rra.gate(torch.cat([z, r, z - r], dim=1)))  # eq. 12
    return rra.norm((1 - beta) * z + beta * r)  # eq. 13


def test_rra_equals_the_literal_equations():
    torch.manual_seed(0)
    rra = ResidualRelationshipAttention(dim=16)
    with torch.no_grad():
        rra.norm.running_mean.uniform_(-1, 1)
        rra.norm.running_var.uniform_(0.5, 2)
    rra.eval()
    n = torch.randn(5, 16)
    s = relationship_position_encoding(torch.rand(5, 3, 4, 4))
    with torch.no_grad():
        assert torch.allclose(rra(n, s), literal_rra(rra, n, s), rtol=1e-5, atol=1e-5)
        attn = rra.attention(n, s)
    assert torch.allclose(attn.sum(dim=0), torch.ones(5))  # every Z_j is a convex combination
    assert not torch.allclose(attn.sum(dim=1), torch.ones(5))


def test_rra_adds_exactly_the_parameters_of_the_equations():
    d, k = 1024, 120
    added = 4 * d * d + 3 * d + 2 * d + d * k + k  # W_Q, W_K, W_V, W_S, W_β (3D→1), BN γ β, classifier
    with torch.device("meta"):
        net = create_model("rbi_densenet121")
        backbone = tv_models.densenet121(weights=None, num_classes=d)  # ImageNet classifier → 1024-d embedding
    assert count_params(net) == count_params(backbone) + added == 12_325_880


@pytest.mark.parametrize("backbone,ours", [("swin_s", 53_947_138), ("convnext_base", 92_938_488)])
def test_paper_rows_and_our_parameter_counts(backbone, ours):
    """The paper's 61.7M / 103.4M are not reached by eqs. 1-13 (see the module docstring): pin our count."""
    cfg = get_model_config("rbi_" + backbone)
    (row_id,) = cfg.paper_rows
    row = paper_row(row_id)
    assert (row["model"], row["input_size"], row["num_classes"]) == (cfg.name, cfg.input_size, cfg.num_classes)
    with torch.device("meta"):
        assert count_params(create_model(cfg.name)) == ours < row["params"]


# -- batch semantics --------------------------------------------------------------------------------


def test_batch_one_is_a_function_of_the_image_alone(model):
    a, partner, other = normalise(images(1, 2)), normalise(images(1, 3)), normalise(images(3, 4))
    with torch.no_grad():
        first = model(a)
        model(torch.cat([a, partner]))
        model(other)
        assert torch.equal(model(a), first)
        # At B = 1: A = 1, S = s₀, so C = BN((1 − β)(W_V n + s₀) + β W_S n); W_Q and W_K play no part.
        rra, n = model.rra, model.backbone(a)
        z = rra.value(n) + 20 * math.log10(1 / PSNR_EPS)
        r = rra.skip(n)
        beta = torch.sigmoid(rra.gate(torch.cat([z, r, z - r], dim=1)))
        by_hand = model.classifier(rra.norm((1 - beta) * z + beta * r))
    assert torch.allclose(first, by_hand, rtol=1e-4, atol=1e-4)


def test_batch_two_output_depends_on_the_partner_not_the_order(model):
    a, b, c = (normalise(images(1, seed)) for seed in (2, 3, 5))
    with torch.no_grad():
        alone = model(a)[0]
        with_b = model(torch.cat([a, b]))
        with_c = model(torch.cat([a, c]))
        swapped = model(torch.cat([b, a]))
    assert (with_b[0] - with_c[0]).abs().max() > 1e-2
    assert (with_b[0] - alone).abs().max() > 1e-2
    assert torch.allclose(swapped, with_b.flip(0), atol=1e-5)  # the batch is a set: order only permutes


def test_export_keeps_the_batch_and_runners_refuse_any_other(model, tmp_path):
    with pytest.raises(UserInputError, match="depends on the batch"):
        export_onnx(model, str(tmp_path / "dyn.onnx"), batch="dynamic")
    result = export_onnx(model, str(tmp_path / "rbi.onnx"), batch=2)
    assert result.parity.rel_error <= 1e-4
    with open(result.sidecar) as fh:
        record = json.load(fh)
    assert record["batch"] == 2 and record["batch_dependent"] is True
    pair = normalise(images(2, 6))
    with torch.no_grad():
        reference = model(pair).numpy()
    with OnnxRunner(result.path) as runner:
        assert np.allclose(runner.infer(pair.numpy()), reference, rtol=1e-4, atol=1e-5)
        for n in (1, 3):
            with pytest.raises(UserInputError, match="depends on the batch.*feed exactly 2 images") as refused:
                runner.infer(normalise(images(n, 7)).numpy())
            assert "batch 1 (the default)" in str(refused.value) and "--batch {}".format(n) not in str(refused.value)


def test_batch_1_artifact_predicts_many_images_one_at_a_time(model, tmp_path):
    from PIL import Image

    result = export_onnx(model, str(tmp_path / "rbi-b1.onnx"))  # the default batch, 1
    paths = []
    for i, pixels in enumerate(images(3, 11)):
        paths.append(str(tmp_path / "{}.png".format(i)))
        Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(paths[-1])
    with OnnxRunner(result.path) as runner:
        together = runner.predict(paths, topk=5)
        alone = [runner.predict([path], topk=5)[0] for path in paths]
        batch = runner.preprocess_images(paths)
        logits = runner.infer(batch)
    assert together == alone and len(together) == 3
    with torch.no_grad():
        singles = torch.cat([model(torch.from_numpy(batch[i : i + 1])) for i in range(3)]).numpy()
    assert np.allclose(logits, singles, rtol=1e-4, atol=1e-5)  # each image as its own batch of 1
