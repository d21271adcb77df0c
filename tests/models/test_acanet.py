"""ACANet blocks: ACCB reparameterization is exact, FCSA is ACmix's attention, layout and Table 4 switches."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.errors import UserInputError
from fgvc_edge.models import create_model
from fgvc_edge.models.acanet import (
    ACCB,
    FCSA,
    TABLE4_ROWS,
    AcaBottleneck,
    Downsample2x2,
    WindowAttention,
    position_grid,
    reflect_pad_index,
    tile_layout,
)


def randomize_bn(module: torch.nn.Module) -> None:
    """RepVGG's verify habit: non-trivial running statistics and affine parameters everywhere."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def rel_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


# -- ACCB ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stride,padding,size",
    [(1, 1, 9), (2, 1, 9), (2, 1, 10), (1, 0, 8), (2, 0, 9), (1, 2, 7), (2, 2, 8)],
)
def test_accb_reparameterize_is_exact(stride, padding, size):
    torch.manual_seed(0)
    block = ACCB(5, 6, 3, stride=stride, padding=padding)
    randomize_bn(block)
    block.eval()
    x = torch.randn(2, 5, size, size + 1)
    plain = F.conv2d(x, torch.zeros(6, 5, 3, 3), stride=stride, padding=padding)
    with torch.no_grad():
        ref = block(x)
        before = {k: v.clone() for k, v in block.state_dict().items()}
        kernel, bias = block.get_equivalent_kernel_bias()
        assert all(torch.equal(v, block.state_dict()[k]) for k, v in before.items())  # pure
        assert ref.shape == plain.shape  # the asymmetric branches line up with the square one
        block.reparameterize()
        fused = block(x)
    assert set(dict(block.named_children())) == {"fused"}
    assert rel_error(ref, fused) <= 1e-5
    assert rel_error(ref, F.conv2d(x, kernel, bias, stride=stride, padding=padding)) <= 1e-5


def test_accb_reparameterize_twice_is_a_no_op():
    torch.manual_seed(0)
    block = ACCB(4, 4, 3, stride=2)
    randomize_bn(block)
    block.eval().reparameterize()
    fused = block.fused
    weights = {k: v.clone() for k, v in block.state_dict().items()}
    block.reparameterize()
    assert block.fused is fused
    assert all(torch.equal(v, block.state_dict()[k]) for k, v in weights.items())
    kernel, bias = block.get_equivalent_kernel_bias()
    assert torch.equal(kernel, fused.weight) and torch.equal(bias, fused.bias)


def test_model_with_reparameterized_accbs_keeps_its_logits():
    torch.manual_seed(0)
    model = create_model("acanet_resnet18", num_classes=7, input_size=64)
    randomize_bn(model)
    x = torch.randn(2, 3, 64, 64)
    accbs = [m for m in model.modules() if isinstance(m, ACCB)]
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        ref = model(x)
        for block in accbs:
            block.reparameterize()
        out = model(x)
    assert len(accbs) == 8
    assert rel_error(ref, out) <= 1e-5
    assert ref.argmax(1).tolist() == out.argmax(1).tolist()
    # Each block loses its 1×3 and 3×1 kernels and its three BNs' affine parameters, gains one bias.
    removed = sum(6 * b.in_ch * b.out_ch + 6 * b.out_ch - b.out_ch for b in accbs)
    assert sum(p.numel() for p in model.parameters()) == params - removed


# -- FCSA ------------------------------------------------------------------------------------------


def acmix_attention(fcsa: FCSA, x: torch.Tensor) -> torch.Tensor:
    """ACmix's attention path written out (reflection pad + unfold, pe = W·xy padded alike).

    Where reflection is undefined (pad ≥ map size) numpy's repeated reflection stands in for it.
    """
    heads, hd, k = fcsa.heads, fcsa.head_dim, fcsa.window
    r = k // 2
    n, c, h, w = x.shape

    def pad(t: torch.Tensor) -> torch.Tensor:
        if r < min(h, w):
            return F.pad(t, (r, r, r, r), mode="reflect")
        return torch.from_numpy(np.pad(t.numpy(), ((0, 0), (0, 0), (r, r), (r, r)), mode="reflect"))

    def unfold(t: torch.Tensor) -> torch.Tensor:
        return F.unfold(pad(t), k).reshape(t.shape[0], t.shape[1], k * k, h, w)

    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    pe = F.conv2d(torch.stack([xs, ys]).unsqueeze(0), fcsa.pos_embed.weight)
    q = fcsa.q(x).reshape(n * heads, hd, h, w) * hd ** -0.5
    key = fcsa.k(x).reshape(n * heads, hd, h, w)
    v = fcsa.v(x).reshape(n * heads, hd, h, w)
    att = torch.softmax((q.unsqueeze(2) * (unfold(key) + pe.unsqueeze(2) - unfold(pe))).sum(1), dim=1)
    return (att.unsqueeze(1) * unfold(v)).sum(2).reshape(n, c, h, w)


@pytest.mark.parametrize("h,w", [(9, 11), (7, 7), (3, 5), (2, 2), (1, 1), (1, 4)])
def test_fcsa_attention_path_is_acmix(h, w):
    torch.manual_seed(0)
    fcsa = FCSA(16, heads=4, window=7)
    x = torch.randn(2, 16, h, w)
    with torch.no_grad():
        fcsa.rate_conv.zero_()
        fcsa.rate_att.fill_(1.0)
        out = fcsa(x)
        ref = acmix_attention(fcsa, x)
        assert torch.isfinite(out).all()
        assert rel_error(ref, out) <= 1e-5
        if h == w == 1:  # a one-pixel map can only attend to itself
            assert torch.allclose(out, fcsa.v(x), atol=1e-6)


def offset_walk_attention(fcsa: FCSA, x: torch.Tensor) -> torch.Tensor:
    """FCSA's attention as exported until the tiled layout: 49 window offsets walked one by one on the
    reflected maps, the positional term as (Wᵀq)·(xy_ij − xy_ab). Checkpoints were trained with it."""
    hd, k = fcsa.head_dim, fcsa.window
    n, c, h, w = x.shape
    rows = torch.tensor(reflect_pad_index(h, k // 2))
    cols = torch.tensor(reflect_pad_index(w, k // 2))
    q = fcsa.q(x).reshape(-1, hd, h, w) * hd ** -0.5
    k_pad = fcsa.k(x).reshape(-1, hd, h, w).index_select(2, rows).index_select(3, cols)
    v_pad = fcsa.v(x).reshape(-1, hd, h, w).index_select(2, rows).index_select(3, cols)
    xy = torch.from_numpy(position_grid(h, w))[0]
    xy_pad = xy.index_select(1, rows).index_select(2, cols)
    offsets = [(a, b) for a in range(k) for b in range(k)]
    logits = torch.stack([(q * k_pad[:, :, a : a + h, b : b + w]).sum(1) for a, b in offsets], dim=1)
    q_pos = F.conv2d(q, fcsa.pos_embed.weight.transpose(0, 1))  # (N·heads, 2, H, W)
    rel = torch.stack([xy - xy_pad[:, a : a + h, b : b + w] for a, b in offsets], dim=1)  # (2, 49, H, W)
    attn = torch.softmax(logits + (q_pos.unsqueeze(2) * rel).sum(1), dim=1)
    out = sum(attn[:, i : i + 1] * v_pad[:, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offsets))
    return out.reshape(n, c, h, w)


def attention_only(fcsa: FCSA) -> FCSA:
    with torch.no_grad():
        fcsa.rate_conv.zero_()
        fcsa.rate_att.fill_(1.0)
    return fcsa


@pytest.mark.parametrize("channels,h,w", [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7), (16, 9, 11),
                                          (16, 5, 3), (16, 2, 2), (16, 1, 4)])
def test_tiled_attention_matches_the_offset_walk(channels, h, w):
    """The tiled GEMM layout against the previous export's arithmetic, at ACANet's 224 px map sizes (tiles that
    divide the map and tiles padded past it) and at maps smaller than the window."""
    torch.manual_seed(0)
    fcsa = attention_only(FCSA(channels)).eval()
    x = 3 * torch.randn(2, channels, h, w)  # larger logits than at init: a sharper softmax
    with torch.no_grad():
        assert rel_error(offset_walk_attention(fcsa, x), fcsa(x)) <= 1e-5


def test_fcsa_state_dict_keys_are_unchanged():
    """Checkpoints saved before the tiled layout must keep loading: the attention module has no state."""
    keys = {"q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias", "pos_embed.weight", "fc.weight",
            "shift_conv.weight", "shift_conv.bias", "rate_att", "rate_conv"}
    assert set(FCSA(16).state_dict()) == keys


@pytest.mark.parametrize("h,w", [(8, 8), (7, 9), (3, 3), (1, 5)])
def test_tile_layout_windows_are_exactly_the_reflected_windows(h, w):
    """Every query slot of a real pixel sees, through the mask, exactly its 7×7 reflected window."""
    window = 7
    layout = tile_layout(h, w, window, min(WindowAttention.TILE, max(h, w)))
    side = layout.tile + window - 1
    rows, cols = reflect_pad_index(h, 3), reflect_pad_index(w, 3)
    halo = layout.halo.reshape(layout.tiles, side * side)
    for pixel in range(h * w):
        slot = layout.slots[pixel]
        assert layout.queries[slot] == pixel
        tile, local = divmod(int(slot), layout.tile ** 2)
        seen = sorted(halo[tile][layout.mask[local] == 0].tolist())
        i, j = divmod(pixel, w)
        expected = sorted(rows[i + a] * w + cols[j + b] for a in range(window) for b in range(window))
        assert seen == expected


def test_fcsa_conv_path_starts_as_shift_and_sum():
    """Eqs. 6–8: at initialisation the grouped conv sums its k² inputs, input i shifted by (i//k − 1, i%k − 1)."""
    torch.manual_seed(0)
    fcsa = FCSA(8, heads=4, window=7, kernel_conv=3)
    assert fcsa.rate_att.item() == fcsa.rate_conv.item() == 0.5
    groups = fcsa.head_dim
    x = torch.randn(1, 9 * groups, 5, 6)
    padded = F.pad(x, (1, 1, 1, 1))
    with torch.no_grad():
        out = fcsa.shift_conv(x)
    per_group = torch.stack(
        [sum(padded[:, g * 9 + i, i // 3 : i // 3 + 5, i % 3 : i % 3 + 6] for i in range(9)) for g in range(groups)], 1
    )
    expected = per_group.repeat_interleave(fcsa.channels // groups, dim=1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_fcsa_in_a_built_model_keeps_acmix_init_and_does_not_amplify():
    """Kaiming fan-out on fc + one-hot shifts gave each FCSA a gain of ~4 and broke 224-px export parity."""
    torch.manual_seed(0)
    model = create_model("acanet_resnet50")
    fcsas = [m for m in model.modules() if isinstance(m, FCSA)]
    gains = []
    hooks = [f.register_forward_hook(lambda m, i, o: gains.append(float(o.std() / i[0].std()))) for f in fcsas]
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    assert len(gains) == 16 and max(gains) < 1.5
    k = fcsas[0].kernel_conv
    assert all(torch.equal(f.shift_conv.weight.sum((2, 3)), torch.ones(f.channels, k * k)) for f in fcsas)


# -- layout and switches ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [7, 8, 13, 56])
def test_downsample2x2_matches_the_strided_main_path(size):
    x = torch.randn(1, 4, size, size)
    main = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)(x)
    assert Downsample2x2(4, 8)(x).shape == main.shape


def count(model: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize(
    "row,accbs,fcsas,down2x2",
    [("complete", 8, 8, 3), ("minus_accb", 0, 8, 3), ("minus_fcsa_accb", 0, 0, 0)],
)
def test_table4_rows(row, accbs, fcsas, down2x2):
    model = create_model("acanet_resnet18", **TABLE4_ROWS[row])
    assert model.model_args == TABLE4_ROWS[row]
    assert (count(model, ACCB), count(model, FCSA), count(model, Downsample2x2)) == (accbs, fcsas, down2x2)


def test_without_accb_fcsa_and_2x2_it_is_resnet18():
    model = create_model("acanet_resnet18", **TABLE4_ROWS["minus_fcsa_accb"])
    ours = sorted(p.numel() for p in model.parameters())
    assert ours == sorted(p.numel() for p in resnet18(num_classes=200).parameters())


def test_resnet50_layout():
    model = create_model("acanet_resnet50", num_classes=10)
    blocks = [m for m in model.modules() if isinstance(m, AcaBottleneck)]
    assert len(blocks) == 16
    assert all(isinstance(b.conv2, ACCB) and isinstance(b.fcsa[0], FCSA) for b in blocks)
    assert [b.conv2.stride for b in blocks if isinstance(b.downsample, Downsample2x2)] == [2, 2, 2]
    assert not isinstance(blocks[0].downsample, Downsample2x2)  # layer1: channels change, size does not
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_ablation_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("acanet_resnet18", num_classes=3, input_size=64, **TABLE4_ROWS["minus_accb"])
    folder = save_checkpoint(model, str(tmp_path / "ck"))
    restored = create_model("acanet_resnet18", checkpoint=folder)
    assert count(restored, ACCB) == 0 and count(restored, FCSA) == 8
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))


def test_unknown_shortcut_is_a_user_error():
    with pytest.raises(UserInputError, match="shortcut"):
        create_model("acanet_resnet18", shortcut="maxpool")


@pytest.fixture(scope="module")
def acanet_fp32(tmp_path_factory):
    from fgvc_edge.export import export_onnx

    torch.manual_seed(0)
    model = create_model("acanet_resnet18", num_classes=5, input_size=64)
    return export_onnx(model, str(tmp_path_factory.mktemp("aca") / "aca.onnx"))


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_int8_quantizes_fcsa_convs_and_keeps_its_attention_float(target, acanet_fp32, tmp_path):
    import onnx

    from fgvc_edge.precision import calibrate_onnx
    from fgvc_edge.precision.data import SyntheticImages

    scopes = acanet_fp32.record["int8_float_scopes"]
    assert scopes == ["/layer{}/layer{}.{}/conv2/conv2.0/".format(s, s, b) for s in (1, 2, 3, 4) for b in (0, 1)]
    result = calibrate_onnx(acanet_fp32.path, SyntheticImages(4, size=73, seed=0), num_images=4, target=target,
                            cache_dir=str(tmp_path / "cache"))
    graph = onnx.load(result.path).graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def quantized_input(node):  # Conv ← DequantizeLinear ← QuantizeLinear: the conv runs in INT8
        return any(producer.get(name) is not None and producer[name].op_type == "DequantizeLinear" for name in node.input)

    def quantized_output(node):
        return any(c.op_type == "QuantizeLinear" for out in node.output for c in consumers.get(out, []))

    in_scope = [n for n in graph.node if any(n.name.startswith(s) for s in scopes)]
    attention = [n for n in in_scope if n.op_type in ("MatMul", "Softmax")]
    convs = [n for n in in_scope if n.op_type == "Conv"]
    # Each block's two window products and its softmax stay float, neither fed nor followed by Q/DQ.
    assert len(attention) == 3 * len(scopes)
    assert not any(quantized_input(n) or quantized_output(n) for n in attention)
    assert convs and all(quantized_input(n) for n in convs)  # q/k/v, fc and shift convs are INT8
    # Random weights, 4 synthetic images: measured min cosine 0.997 (onnxruntime form) and 0.989 (tensorrt
    # form, symmetric), rel error 0.06 / 0.15 — as with the offset-walk export (0.998 / 0.992, 0.05 / 0.15).
    check = result.record["int8_check"]
    assert check["top1_agreement"] == 1.0 and check["min_cosine"] > 0.98 and check["rel_error"] < 0.2


def test_macs_count_the_window_attention_by_its_definition(monkeypatch):
    """fvcore traces the tiled GEMMs (padded halos); count_macs replaces them by window² products."""
    from fgvc_edge.models.complexity import count_macs

    model = create_model("acanet_resnet18", num_classes=5, input_size=64)
    with_attention, _ = count_macs(model, 64)
    monkeypatch.setattr(WindowAttention, "declared_macs", lambda self, q, k, v: 0)
    convs_only, _ = count_macs(model, 64)
    # Basic blocks keep FCSA's width: 2 blocks per stage at 16², 8², 4², 2² for a 64 px input; q·k and
    # attention·v, 49 window positions per pixel and channel.
    expected = sum(2 * 2 * 49 * s * s * c for c, s in ((64, 16), (128, 8), (256, 4), (512, 2)))
    assert with_attention - convs_only == expected


def test_onnx_runtime_reproduces_the_offset_walk(tmp_path, monkeypatch):
    """The exported tiled graph in ONNX Runtime against the previous export's arithmetic in PyTorch (80 px:
    20², 10², 5², 3² maps: tiles that divide the map, tiles padded past it, a map smaller than a tile)."""
    import onnxruntime as ort

    from fgvc_edge.export import export_onnx

    torch.manual_seed(0)
    model = create_model("acanet_resnet18", num_classes=5, input_size=80)
    randomize_bn(model)
    path = export_onnx(model, str(tmp_path / "aca.onnx"), batch="dynamic").path
    x = torch.randn(2, 3, 80, 80)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ours = session.run(None, {"input": x.numpy()})[0]
    monkeypatch.setattr(FCSA, "forward", lambda self, t: offset_walk_attention(self, t) * self.rate_att
                        + self._conv(self.q(t), self.k(t), self.v(t)) * self.rate_conv)
    with torch.no_grad():
        reference = model(x)
    assert rel_error(reference, torch.from_numpy(ours)) <= 1e-5
