"""CMAL-Net: regions against a per-sample reference of the official procedure, modes, heads, the ONNX
graph (static, the crop as two MatMuls, boxes read back), and official checkpoints (state dict and whole-module
pickle, built here in the official layout) read without running pickled code."""
import copy
import os
import sys
import types
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from fgvc_edge.errors import FgvcError, UserInputError
from fgvc_edge.export import export_onnx
from fgvc_edge.precision import convert_fp16
from fgvc_edge.precision.int8 import float_nodes
from fgvc_edge.importers import import_official_checkpoint
from fgvc_edge.importers.cmal import OFFICIAL_CLASSES
from fgvc_edge.importers.safe_pickle import load_torch_archive
from fgvc_edge.models import create_model, get_model_config
from fgvc_edge.models.cmal import (
    AttentionBoxProbe,
    attention_box,
    box_from_matrices,
    boxes_agree,
    class_activation_map,
    crop_matrix_names,
    crop_regions,
    overall_attention,
    resize_matrices,
    upsample_attention,
)

SMALL = 64
K = 5


# -- the official procedure, per sample, in numpy (utils.py: map_generate, attention_im, highlight_im) ------


def ref_cam(features, logits, w1, w4):
    """W4[k]·(W1·F) for one image, in the official order."""
    c, h, w = features.shape
    hidden = w1 @ features.reshape(c, h * w)
    return (w4[int(np.argmax(logits))] @ hidden).reshape(h, w)


def ref_resize(image, out_h, out_w):
    """upsample_bilinear (align_corners=True) of a (..., h, w) array."""
    h, w = image.shape[-2:]
    ys = np.arange(out_h) * ((h - 1) / (out_h - 1)) if out_h > 1 else np.zeros(1)
    xs = np.arange(out_w) * ((w - 1) / (out_w - 1)) if out_w > 1 else np.zeros(1)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[:, None]
    wx = (xs - x0)[None, :]
    top = image[..., y0, :][..., x0] * (1 - wx) + image[..., y0, :][..., x1] * wx
    bottom = image[..., y1, :][..., x0] * (1 - wx) + image[..., y1, :][..., x1] * wx
    return top * (1 - wy) + bottom * wy


def ref_normalize(m):
    return (m - m.min()) / (m.max() - m.min() + 1e-6)


def ref_region(image, attention, theta=0.5, padding_ratio=0.1):
    """(box, crop) of one image from its normalised attention map, as attention_im after normalising."""
    _, img_h, img_w = image.shape
    nonzero = np.argwhere(attention >= theta)
    h_min = max(int(nonzero[:, 0].min() - padding_ratio * img_h), 0)
    h_max = min(int(nonzero[:, 0].max() + padding_ratio * img_h), img_h)
    w_min = max(int(nonzero[:, 1].min() - padding_ratio * img_w), 0)
    w_max = min(int(nonzero[:, 1].max() + padding_ratio * img_w), img_w)
    crop = ref_resize(image[:, h_min:h_max, w_min:w_max], img_h, img_w)
    return (h_min, h_max, w_min, w_max), crop


def ref_aoval(image, cams):
    img_h, img_w = image.shape[1:]
    maps = [ref_normalize(ref_resize(cam, img_h, img_w)) for cam in cams]
    return ref_region(image, ref_normalize(maps[0] + maps[1] + maps[2]))


def random_expert_maps(n, sizes, channels=6, seed=0):
    rng = np.random.default_rng(seed)
    features = [np.maximum(rng.standard_normal((n, channels, s, s)), 0) for s in sizes]
    logits = [rng.standard_normal((n, K)) for _ in sizes]
    weights = [(rng.standard_normal((4, channels)), rng.standard_normal((K, 4))) for _ in sizes]
    return features, logits, weights


# -- regions ---------------------------------------------------------------------------------------------


def test_cam_is_the_official_map_generate():
    features, logits, weights = random_expert_maps(3, [7])
    ours = class_activation_map(*(torch.from_numpy(a) for a in (features[0], logits[0], *weights[0])))
    for i in range(3):
        np.testing.assert_allclose(ours[i].numpy(), ref_cam(features[0][i], logits[0][i], *weights[0]), rtol=1e-12)


@pytest.mark.parametrize("height,width", [(64, 64), (48, 80), (100, 70)])
def test_aoval_box_and_crop_match_the_official_procedure(height, width):
    n = 6
    features, logits, weights = random_expert_maps(n, [8, 4, 2], seed=height + width)
    images = np.random.default_rng(1).standard_normal((n, 3, height, width))
    cams = [
        class_activation_map(*(torch.from_numpy(a) for a in (f, p, *w))) for f, p, w in zip(features, logits, weights)
    ]
    attention = overall_attention([upsample_attention(c, (height, width)) for c in cams])
    boxes = attention_box(attention)
    crops = crop_regions(torch.from_numpy(images), boxes)
    assert crops.shape == (n, 3, height, width)
    for i in range(n):
        ref_box, ref_crop = ref_aoval(images[i], [c[i].numpy() for c in cams])
        assert tuple(int(v) for v in boxes[i]) == ref_box
        np.testing.assert_allclose(crops[i].numpy(), ref_crop, atol=1e-9)
    assert len({tuple(b.tolist()) for b in boxes}) > 1  # the batch really holds different boxes


def test_each_expert_region_matches_attention_im():
    features, logits, weights = random_expert_maps(4, [8])
    images = np.random.default_rng(2).standard_normal((4, 3, 64, 64))
    cam = class_activation_map(*(torch.from_numpy(a) for a in (features[0], logits[0], *weights[0])))
    boxes = attention_box(upsample_attention(cam, (64, 64)))
    for i in range(4):
        ref_box, ref_crop = ref_region(images[i], ref_normalize(ref_resize(cam[i].numpy(), 64, 64)))
        assert tuple(int(v) for v in boxes[i]) == ref_box
        crop = crop_regions(torch.from_numpy(images[i : i + 1]), boxes[i : i + 1])[0]
        np.testing.assert_allclose(crop.numpy(), ref_crop, atol=1e-9)


@pytest.mark.parametrize("size", [64, 80, 100, 448, 640])
def test_padded_edges_reproduce_official_int_truncation(size):
    # One positive pixel per image, at every row: each first/last index meets the official int() edges.
    attention = torch.eye(size).unsqueeze(2)  # (N=size, H=size, W=1)
    boxes = attention_box(attention)
    for r in range(size):
        official = (max(int(r - 0.1 * size), 0), min(int(r + 0.1 * size), size))
        assert (int(boxes[r, 0]), int(boxes[r, 1])) == official
    boxes = attention_box(attention.transpose(1, 2))  # the same along the width
    assert torch.equal(boxes[:, 2:], attention_box(attention)[:, :2])


def test_constant_map_falls_back_to_the_whole_image():
    images = torch.randn(2, 3, 40, 56, dtype=torch.float64)
    attention = torch.stack([torch.zeros(40, 56), torch.full((40, 56), 3.0)])
    normalised = overall_attention([upsample_attention(attention[:, :5, :7], (40, 56))] * 3)
    boxes = attention_box(normalised)
    assert boxes.tolist() == [[0, 40, 0, 56], [0, 40, 0, 56]]
    assert torch.allclose(crop_regions(images, boxes), images, atol=1e-9)


def test_box_is_read_back_from_the_matrices():
    boxes = torch.tensor([[0.0, 64, 0, 48], [3, 41, 10, 11], [63, 64, 0, 48], [0, 2, 46, 48]])
    assert torch.equal(box_from_matrices(*resize_matrices(boxes, 64, 48)), boxes)


@pytest.mark.parametrize("size", [64, 448])
def test_crop_is_the_official_slice_and_upsample_in_float32(size):
    # The official test(): image[:, :, top:bottom, left:right] → upsample_bilinear (align_corners=True), in
    # float32. Our separable matrices take the same taps and weights, so only the order of two float
    # additions may differ (≤ 1 ulp of the pixel values, ~5e-7 for |x| < 4); a sampling grid with positions
    # rounded at image scale misses by ~4e-5 at 64 px and ~3e-4 at 448 px.
    rng = np.random.default_rng(size)
    images = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(size))
    starts = rng.integers(0, size, size=(8, 2))
    ends = starts + 1 + (rng.random((8, 2)) * (size - starts)).astype(int)
    boxes = torch.tensor(np.stack([starts[:, 0], ends[:, 0], starts[:, 1], ends[:, 1]], axis=1), dtype=torch.float32)
    boxes[0] = torch.tensor([size - 1, size, 0, 1])  # single pixel: the whole output is that pixel
    crops = crop_regions(images, boxes)
    for crop, image, (top, bottom, left, right) in zip(crops, images, boxes.int().tolist()):
        official = F.interpolate(image[None, :, top:bottom, left:right], size=(size, size), mode="bilinear",
                                 align_corners=True)[0]
        assert (crop - official).abs().max().item() <= 2 * torch.finfo(torch.float32).eps * image.abs().max().item()
    assert torch.equal(crops[0], images[0, :, -1:, :1].expand(-1, size, size))


def test_whole_image_box_returns_the_image_itself():
    images = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    assert torch.equal(crop_regions(images, torch.tensor([[0.0, 48, 0, 80]] * 2)), images)


def test_boxes_agree_only_within_one_pixel_on_the_threshold():
    own = torch.tensor([[4.0, 40, 4, 40]] * 4)
    other = torch.tensor([[4.0, 40, 4, 40], [5, 40, 4, 40], [5, 40, 4, 40], [6, 40, 4, 40]])
    attention = torch.zeros(4, 8, 8)
    attention[[1, 3], 0, 0] = 0.5 + 1e-4  # on the threshold
    attention[2, 0, 0] = 0.52  # clearly above it
    assert boxes_agree(own, other, attention, 0.5).tolist() == [True, True, False, False]


# -- model -----------------------------------------------------------------------------------------------


def small_model(mode="raw+aoval", **kwargs):
    torch.manual_seed(0)
    model = create_model("cmal_resnet18", num_classes=K, input_size=SMALL, mode=mode, **kwargs)
    with torch.no_grad():  # random BN statistics so BN cannot hide behind the identity
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


def test_structure_follows_the_official_code():
    model = small_model(activation="elu")
    assert [b[0].conv.in_channels for b in model.blocks] == [128, 256, 512]
    assert [(b[0].conv.out_channels, b[1].conv.out_channels, b[1].conv.kernel_size) for b in model.blocks] == [
        (512, 1024, (3, 3))
    ] * 3
    assert all(b[1].bn.momentum == 0.01 and b[1].conv.bias is None for b in model.blocks)
    assert all(isinstance(b[1].act, nn.ELU) for b in model.blocks)
    assert isinstance(small_model().blocks[0][0].act, nn.ReLU)
    assert model.concat_head[0].num_features == 3072 and model.concat_head[4].out_features == K
    cfg = get_model_config("cmal_resnet50")
    assert (cfg.input_size, cfg.num_classes, cfg.variants) == (448, 100, ("raw+aoval", "raw"))
    assert cfg.preprocess.resize_size == 550 and cfg.preprocess.resize_mode == "exact"
    assert cfg.preprocess.mean == cfg.preprocess.std == (0.5, 0.5, 0.5)


def test_paper_parameter_count():
    # Table 9: 43M parameters at 100 classes (± 3 %).
    model = create_model("cmal_resnet50")
    assert abs(sum(p.numel() for p in model.parameters()) / 43e6 - 1) < 0.03


def test_raw_and_aoval_logits_follow_the_official_inference():
    model = small_model()
    x = torch.randn(3, 3, SMALL, SMALL)
    with torch.no_grad():
        out = model.experts(x)
        raw = out.p1 + out.p2 + out.p3 + out.p_concat
        assert torch.allclose(small_model(mode="raw")(x), raw, atol=1e-5)
        ours = model(x)
        crops = []
        for i in range(3):
            cams = [
                ref_cam(m[i].double().numpy(), p[i].numpy(), h[1].weight.double().numpy(), h[4].weight.double().numpy())
                for m, p, h in zip(out.maps, out.logits, model.heads)
            ]
            crops.append(torch.from_numpy(ref_aoval(x[i].double().numpy(), cams)[1]).float())
        expected = raw + model.experts(torch.stack(crops)).total()
    assert model.variant == "raw+aoval"
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_train_forward_and_loss():
    model = small_model().train()
    x, y = torch.randn(2, 3, SMALL, SMALL), torch.tensor([1, 3])
    out = model(x)
    assert [p.shape for p in out.logits] == [(2, K)] * 4
    assert [m.shape for m in out.maps] == [(2, 1024, 8, 8), (2, 1024, 4, 4), (2, 1024, 2, 2)]
    assert not any(m.requires_grad for m in out.maps)
    expected = sum(F.cross_entropy(p, y).item() for p in out.logits)
    assert model.loss(out, y).item() == pytest.approx(expected, rel=1e-6)
    maps = model.attention_maps(out, (SMALL, SMALL))
    assert [tuple(m.shape) for m in maps] == [(2, SMALL, SMALL)] * 3
    assert all(m.min() >= 0 and m.max() <= 1 for m in maps)


def test_bad_arguments_are_user_errors():
    for kwargs in ({"mode": "aoval"}, {"activation": "gelu"}, {"threshold": 1.5}):
        with pytest.raises(UserInputError):
            create_model("cmal_resnet18", **kwargs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_model()
    return model, export_onnx(model, str(tmp_path_factory.mktemp("onnx") / "m.onnx"), batch="dynamic")


def test_onnx_graph_is_static_and_boxes_match(exported):
    model, result = exported
    proto = onnx.load(result.path)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert not {"NonZero", "Loop", "If", "Scan", "GridSample", "ScatterND", "ScatterElements"} & set(ops)
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert result.record["fp32_scopes"] == ["/aoval_crop/"] and "/aoval_crop/" in result.record["int8_float_scopes"]
    probe = AttentionBoxProbe(model, proto)
    session = ort.InferenceSession(probe.model_bytes, providers=["CPUExecutionProvider"])
    x = torch.randn(4, 3, SMALL, SMALL, generator=torch.Generator().manual_seed(5))
    _, rows, cols = session.run(["logits", *probe.matrix_names], {"input": x.numpy()})
    assert rows.shape == (4, 1, SMALL, SMALL) and cols.shape == (4, 1, SMALL, SMALL)
    with torch.no_grad():
        own = model.aoval_box(model.experts(x), (SMALL, SMALL))
        own_rows, own_cols = resize_matrices(own, SMALL, SMALL)
    assert torch.equal(box_from_matrices(torch.from_numpy(rows)[:, 0], torch.from_numpy(cols)[:, 0]), own)
    assert torch.equal(torch.from_numpy(rows)[:, 0], own_rows) and torch.equal(torch.from_numpy(cols)[:, 0], own_cols)
    reference, candidate = probe.compare(session, x)
    assert np.linalg.norm(candidate - reference) / np.linalg.norm(reference) < 1e-4


def test_fp16_graph_keeps_the_crop_fp32_and_int8_leaves_it_float(exported, tmp_path):
    # Coordinates, interpolation weights and thresholds: an FP16 position at 448 px is up to 0.25 px off, an
    # INT8 one several pixels. The whole /aoval_crop/ scope stays FP32 / unquantized.
    _, result = exported
    fp16 = convert_fp16(result.path, cache_dir=str(tmp_path))
    proto = onnx.load(fp16.path)
    producers = {name: node for node in proto.graph.node for name in node.output}
    in_scope = [n for n in proto.graph.node if n.name.startswith("/aoval_crop/") and n.op_type != "Cast"]
    assert len(in_scope) > 50 and sum(n.op_type == "MatMul" for n in in_scope) >= 4  # CAMs and the crop
    assert {i.data_type for i in proto.graph.initializer if len(i.dims) == 4} == {onnx.TensorProto.FLOAT16}

    def rounded_to_fp16_inside(name):
        """Whether a value reaching a scope node passed through FP16 after being computed in the scope."""
        via_fp16, node = False, producers.get(name)
        while node is not None and node.op_type == "Cast":
            via_fp16 |= node.attribute[0].i == onnx.TensorProto.FLOAT16
            node = producers.get(node.input[0])
        return via_fp16 and node is not None and node.name.startswith("/aoval_crop/")

    assert not [(n.name, i) for n in in_scope for i in n.input if rounded_to_fp16_inside(i)]
    assert fp16.record["fp16_check"]["top1_agreement"] == 1.0
    fp32 = onnx.load(result.path)
    excluded = set(float_nodes(fp32, result.record["int8_float_scopes"]))
    assert {node.name for node in fp32.graph.node if node.name.startswith("/aoval_crop/")} <= excluded


class _CropOnly(nn.Module):
    def forward(self, images, boxes):
        return crop_regions(images, boxes)


def test_onnx_runtime_crop_is_the_official_slice_and_upsample_in_float32(tmp_path):
    path = str(tmp_path / "crop.onnx")
    images = torch.randn(4, 3, 448, 448, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[0.0, 448, 0, 448], [52, 448, 0, 411], [68, 448, 74, 410], [447, 448, 3, 4]])
    torch.onnx.export(_CropOnly(), (images, boxes), path, input_names=["images", "boxes"], opset_version=17,
                      dynamo=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    crops = torch.from_numpy(session.run(None, {"images": images.numpy(), "boxes": boxes.numpy()})[0])
    assert torch.equal(crops[0], images[0])  # a whole-image box is the image itself
    for crop, image, (top, bottom, left, right) in zip(crops[1:], images[1:], boxes[1:].int().tolist()):
        official = F.interpolate(image[None, :, top:bottom, left:right], size=(448, 448), mode="bilinear",
                                 align_corners=True)[0]
        assert (crop - official).abs().max().item() <= 2 * torch.finfo(torch.float32).eps * image.abs().max().item()


class _FakeSession:
    """Stands in for ONNX Runtime running a raw+aoval graph that crops ``boxes``."""

    def __init__(self, model, boxes):
        self.model, self.boxes = model, boxes

    def run(self, names, feed):
        x = torch.from_numpy(feed["input"])
        with torch.no_grad():
            logits = self.model.experts(x).total() + self.model.experts(crop_regions(x, self.boxes)).total()
        return [logits.numpy(), *(m.unsqueeze(1).numpy() for m in resize_matrices(self.boxes, SMALL, SMALL))]


def _crop_graph(*nodes):
    image = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, None)
    return onnx.helper.make_model(onnx.helper.make_graph(list(nodes), "g", [image], []))


def test_crop_matrices_are_found_or_refused():
    columns = onnx.helper.make_node("MatMul", ["input", "cols"], ["y"])
    rows = onnx.helper.make_node("MatMul", ["rows", "y"], ["crop"])
    assert crop_matrix_names(_crop_graph(columns, rows)) == ("rows", "cols")
    with pytest.raises(FgvcError, match="two MatMuls"):
        crop_matrix_names(_crop_graph(columns))
    with pytest.raises(FgvcError, match="two MatMuls"):
        crop_matrix_names(_crop_graph(columns, rows, onnx.helper.make_node("MatMul", ["input", "w"], ["z"])))


def test_parity_probe_rejects_a_wrong_box():
    model = small_model()
    proto = _crop_graph(
        onnx.helper.make_node("MatMul", ["input", "cols"], ["y"]), onnx.helper.make_node("MatMul", ["rows", "y"], ["crop"])
    )
    probe = AttentionBoxProbe(model, proto)
    assert probe.matrix_names == ("rows", "cols") and len(proto.graph.output) == 0
    x = torch.randn(2, 3, SMALL, SMALL, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        boxes = model.aoval_box(model.experts(x), (SMALL, SMALL))
    reference, candidate = probe.compare(_FakeSession(model, boxes), x)
    assert np.allclose(reference, candidate, atol=1e-5)
    shifted = boxes.clone()
    shifted[:, 1] = (shifted[:, 1] - 5).clamp(min=shifted[:, 0] + 1)
    assert not torch.equal(shifted, boxes)
    reference, candidate = probe.compare(_FakeSession(model, shifted), x)
    assert np.linalg.norm(candidate - reference) / np.linalg.norm(reference) > 1e-4


# -- official checkpoints --------------------------------------------------------------------------------


class BasicConv(nn.Module):
    """The official basic_conv.BasicConv's layout (conv, bn, relu)."""

    def __init__(self, cin, cout, k, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Features(nn.Module):
    def __init__(self, layers):
        super().__init__()
        for i in range(4):
            setattr(self, "net_layer_{}".format(i), nn.Sequential(layers[i]))
        for i in range(4, 8):
            setattr(self, "net_layer_{}".format(i), nn.Sequential(*layers[i]))

    def forward(self, x):
        for i in range(5):
            x = getattr(self, "net_layer_{}".format(i))(x)
        x1 = self.net_layer_5(x)
        x2 = self.net_layer_6(x1)
        return x1, x2, self.net_layer_7(x2)


def _head(width):
    return nn.Sequential(
        nn.BatchNorm1d(width), nn.Linear(width, 512), nn.BatchNorm1d(512), nn.ELU(inplace=True), nn.Linear(512, K)
    )


class Network_Wrapper(nn.Module):  # noqa: N801 - the official class name
    def __init__(self):
        super().__init__()
        self.Features = Features(list(resnet18().children())[:8])
        for i, c in enumerate((128, 256, 512), start=1):
            setattr(self, "conv_block{}".format(i), nn.Sequential(BasicConv(c, 512, 1), BasicConv(512, 1024, 3, 1)))
            setattr(self, "classifier{}".format(i), _head(1024))
        self.classifier_concat = _head(3072)

    def forward(self, x):
        """The official outputs: (p1, p2, p3, p_concat, map1, map2, map3)."""
        features = enumerate(self.Features(x), start=1)
        maps = [getattr(self, "conv_block{}".format(i))(f) for i, f in features]
        pooled = [m.amax(dim=(2, 3)) for m in maps]
        logits = [getattr(self, "classifier{}".format(i))(v) for i, v in enumerate(pooled, 1)]
        return (*logits, self.classifier_concat(torch.cat(pooled, 1)), *(m.detach() for m in maps))


def official_raw(net, x):
    """test()'s output_1 + output_2 + output_3 + output_concat."""
    p1, p2, p3, concat = net(x)[:4]
    return p1 + p2 + p3 + concat


def official_cam(features, logits, head):
    """map_generate for one image: (W1·F)ᵀ then · W4[argmax] — the official order of the two products."""
    channels, height, width = features.shape
    hidden = features.reshape(channels, height * width).t() @ head[1].weight.t()
    return (hidden @ head[4].weight[logits.argmax()].unsqueeze(1)).reshape(height, width)


def official_box(attention, theta=0.5, padding_ratio=0.1):
    height, width = attention.shape
    nonzero = torch.nonzero(attention >= theta)
    return (max(int(nonzero[:, 0].min().item() - padding_ratio * height), 0),
            min(int(nonzero[:, 0].max().item() + padding_ratio * height), height),
            max(int(nonzero[:, 1].min().item() - padding_ratio * width), 0),
            min(int(nonzero[:, 1].max().item() + padding_ratio * width), width))


def official_test_logits(net, images, boxes=None):
    """utils.test() per image: raw logits + the four logits of highlight_im's crop (the box sliced out,
    upsample_bilinear back to the input size), in the dtype of ``net``/``images``; also the boxes. Given
    ``boxes``, the crop uses them (float64 arithmetic of the float32 decision)."""
    logits, found = [], []
    for i, x in enumerate(images.split(1)):
        size = x.shape[-2:]
        outputs = net(x)
        if boxes is None:
            maps = []
            for features, p, head in zip(outputs[4:], outputs[:3], (net.classifier1, net.classifier2, net.classifier3)):
                cam = official_cam(features[0], p[0], head)[None, None]
                cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=True)[0, 0]  # upsample_bilinear
                maps.append((cam - cam.min()) / (cam.max() - cam.min() + 1e-6))
            total = maps[0] + maps[1] + maps[2]
            box = official_box((total - total.min()) / (total.max() - total.min() + 1e-6))
        else:
            box = boxes[i]
        top, bottom, left, right = box
        crop = F.interpolate(x[:, :, top:bottom, left:right], size=size, mode="bilinear", align_corners=True)
        logits.append(sum(outputs[:4]) + official_raw(net, crop))
        found.append(box)
    return torch.cat(logits), found


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """An official-layout net (resnet18 blocks, random BN statistics), saved both ways the code can."""
    torch.manual_seed(1)
    net = Network_Wrapper().eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    folder = tmp_path_factory.mktemp("official")
    basic_conv = types.ModuleType("basic_conv")
    main = sys.modules["__main__"]
    with pytest.MonkeyPatch.context() as patch:  # the classes as the training script's pickle names them
        patch.setitem(sys.modules, "basic_conv", basic_conv)
        patch.setattr(basic_conv, "BasicConv", BasicConv, raising=False)
        patch.setattr(BasicConv, "__module__", "basic_conv")
        for cls in (Features, Network_Wrapper):
            patch.setattr(main, cls.__name__, cls, raising=False)
            patch.setattr(cls, "__module__", "__main__")
        torch.save(net, str(folder / "model.pth"))
        torch.save(net, str(folder / "model_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(net.state_dict(), str(folder / "state_dict.pth"))
    # torch < 1.6 wrote the legacy (non-zip) format; the importers share one reader for both.
    torch.save(net.state_dict(), str(folder / "state_dict_legacy.pth"), _use_new_zipfile_serialization=False)
    return net, folder


@pytest.mark.parametrize("filename", ["model.pth", "state_dict.pth", "model_legacy.pth", "state_dict_legacy.pth"])
def test_official_checkpoint_imports_with_equal_logits(official, filename):
    net, folder = official
    model = import_official_checkpoint("cmal_resnet18", str(folder / filename))
    assert model.config.num_classes == K and model.variant == "raw+aoval"
    raw = create_model("cmal_resnet18", num_classes=K, mode="raw")
    raw.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        assert torch.allclose(raw(x), official_raw(net, x), atol=1e-5, rtol=1e-5)


REAL_SIZE = 96  # layer4 at 3×3: the three CAMs are 12², 6² and 3² px


@pytest.fixture(scope="module")
def official_on_photos(tmp_path_factory, real_images):
    """An official-layout net whose BatchNorm statistics come from real photos (so its attention maps, boxes and
    predictions differ between images), imported from its state dict; and the photos."""
    torch.manual_seed(0)  # with these weights 4 of the 15 photos get a box smaller than the image
    net = Network_Wrapper()
    preprocess = get_model_config("cmal_resnet18").preprocess.for_input_size(REAL_SIZE)  # Resize((118, 118)) → 96
    photos = real_images.photo_batch(real_images.PHOTO_NAMES, preprocess)
    real_images.set_bn_statistics(net, photos)
    path = tmp_path_factory.mktemp("official_photos") / "state_dict.pth"
    torch.save(net.state_dict(), str(path))
    model = import_official_checkpoint("cmal_resnet18", str(path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tests compare at one thread (see below)
    try:
        with torch.no_grad():
            reference, boxes = official_test_logits(net, photos)
    finally:
        torch.set_num_threads(threads)
    return net, model, photos, reference, boxes


def _relative(logits, reference):
    return (logits - reference).abs().amax(dim=1) / reference.abs().amax(dim=1)


@pytest.mark.usefixtures("one_torch_thread")
def test_imported_network_on_photos_equals_the_official_test_arithmetic(official_on_photos):
    net, model, photos, reference, boxes = official_on_photos
    whole = (0, REAL_SIZE, 0, REAL_SIZE)
    cropped = [i for i, box in enumerate(boxes) if box != whole]
    assert len(cropped) >= 3  # crops really happen, of several shapes
    assert len(set(reference.argmax(dim=1).tolist())) >= 3  # and the photos are told apart
    raw = create_model("cmal_resnet18", num_classes=K, input_size=REAL_SIZE, mode="raw")
    raw.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(raw.eval()(photos), official_raw(net, photos))  # same arithmetic, bit for bit
        ours = torch.cat([model(x) for x in photos.split(1)])  # per image, as the reference
        own_boxes = model.aoval_box(model.experts(photos), photos.shape[-2:])
    assert [tuple(int(v) for v in box) for box in own_boxes] == boxes
    # A whole-image box crops the image itself: those logits are the official ones, bit for bit.
    uncropped = [i for i in range(len(boxes)) if i not in cropped]
    assert torch.equal(ours[uncropped], reference[uncropped])
    # A real crop takes upsample_bilinear's taps and weights; only the rounding of the last of its two
    # additions may differ (≤ 1 ulp, in some pixels). This network turns any 1-ulp change of an input into up
    # to ~1e-5 of max|logit|: its own float32 noise (official float32 vs float64 logits: 1.7e-6 to 1.4e-5).
    # One thread (fixture): PyTorch's upsample kernel itself rounds differently with two threads (a third of
    # the pixels of these crops change by 1 ulp), which moves the official logits by as much.
    assert _relative(ours, reference).max().item() <= 1e-5, _relative(ours, reference)


@pytest.mark.slow
def test_onnx_runtime_on_photos_is_as_close_to_the_official_arithmetic_as_float32_allows(official_on_photos, tmp_path):
    net, model, photos, reference, boxes = official_on_photos
    deployable = create_model("cmal_resnet18", num_classes=K, input_size=REAL_SIZE)
    deployable.load_state_dict(model.state_dict())
    result = export_onnx(deployable, str(tmp_path / "cmal.onnx"), batch="dynamic")
    probe = AttentionBoxProbe(deployable, onnx.load(result.path))
    session = ort.InferenceSession(probe.model_bytes, providers=["CPUExecutionProvider"])
    runs = [session.run(None, {"input": x.numpy()}) for x in photos.split(1)]
    assert [tuple(int(v) for v in box_from_matrices(torch.from_numpy(rows)[:, 0], torch.from_numpy(cols)[:, 0])[0])
            for _, rows, cols in runs] == boxes
    logits = torch.from_numpy(np.concatenate([run[0] for run in runs]))
    # ONNX Runtime's convolutions round differently from PyTorch's; on this network that alone moves the logits
    # by up to ~1e-5 of max|logit|, as much as float32 itself: compare both with the float64 official result.
    with torch.no_grad():
        exact, _ = official_test_logits(copy.deepcopy(net).double(), photos.double(), boxes)
    official_noise = _relative(reference.double(), exact).max().item()
    assert _relative(logits.double(), exact).max().item() <= 2 * official_noise
    assert _relative(logits, reference).max().item() <= 2e-5


def test_whole_module_pickle_holds_only_stand_ins(official):
    _, folder = official
    root = load_torch_archive(str(folder / "model.pth"), module_classes=OFFICIAL_CLASSES)
    assert root.pickled_class == "__main__.Network_Wrapper" and not isinstance(root, nn.Module)
    assert root.children["conv_block1"].children["0"].pickled_class == "basic_conv.BasicConv"
    with pytest.raises(UserInputError, match="Network_Wrapper"):
        load_torch_archive(str(folder / "model.pth"))


def test_cli_import_writes_a_checkpoint(official, tmp_path):
    from typer.testing import CliRunner

    from fgvc_edge.cli import app

    net, folder = official
    runner = CliRunner()
    result = runner.invoke(app, ["import", "cmal_resnet18", str(folder / "model.pth"), "-o", str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    restored = create_model("cmal_resnet18", checkpoint=str(tmp_path / "ck"), mode="raw")
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        assert torch.allclose(restored(x), official_raw(net, x), atol=1e-5, rtol=1e-5)
    args = ["import", "cmal_resnet18", str(folder / "model.pth"), "-o", str(tmp_path / "x"), "--num-classes", "9"]
    bad = runner.invoke(app, args)
    assert bad.exit_code == 2


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch {}".format(self.marker),))


def test_pickled_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"x": torch.zeros(1), "payload": _Evil(marker)}, str(tmp_path / "evil.pth"))
    with pytest.raises(UserInputError, match="system"):
        import_official_checkpoint("cmal_resnet50", str(tmp_path / "evil.pth"))
    assert not marker.exists()
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(UserInputError):
        import_official_checkpoint("cmal_resnet50", str(tmp_path / "text.pth"))
    with pytest.raises(UserInputError, match="no importer"):
        import_official_checkpoint("resnet50", str(tmp_path / "evil.pth"))


def test_unknown_keys_are_refused(tmp_path):
    state = {"Features.net_layer_0.0.weight": torch.zeros(1), "extra.weight": torch.zeros(1)}
    torch.save(state, str(tmp_path / "s.pth"))
    with pytest.raises(UserInputError, match="unknown keys"):
        import_official_checkpoint("cmal_resnet18", str(tmp_path / "s.pth"))


@pytest.mark.slow
def test_paper_macs():
    # Table 9 at 448 px, 100 classes: 37.4G MACs RAW, 74.8G RAW + A_oval (± 3 %); fvcore counts one MAC as one.
    from fvcore.nn import FlopCountAnalysis

    for mode, paper in (("raw", 37.4e9), ("raw+aoval", 74.8e9)):
        analysis = FlopCountAnalysis(create_model("cmal_resnet50", mode=mode), torch.randn(1, 3, 448, 448))
        analysis.unsupported_ops_warnings(False)
        assert abs(analysis.total() / paper - 1) < 0.03
