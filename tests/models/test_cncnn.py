"""CN-CNN: the paper's level recurrence, the low→high passing, the ablation switches, official weights."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.errors import UserInputError
from fgvc_edge.importers.cncnn import convert_official_state_dict, load_official_checkpoint, load_official_state_dict
from fgvc_edge.models import create_model, get_model_config
from fgvc_edge.models.cncnn import LevelConvLSTM
from fgvc_edge.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD

NAME = "cncnn_resnet50"
SIZE = 64  # layer2/3/4 at 8/4/2 px: the ×2 and ×4 upsamplings are real
NUM_CLASSES = 7


def build(**kwargs):
    torch.manual_seed(0)
    return create_model(NAME, num_classes=NUM_CLASSES, input_size=SIZE, **kwargs)


def levels(batch=1, size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 256, size, size, generator=generator) for _ in range(3)]


@pytest.fixture(scope="module")
def model():
    """The default model with random BN statistics, shared by the tests that only read it (eval mode)."""
    model = build()
    randomize_batchnorm(model)
    return model


def randomize_batchnorm(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)


def test_default_config_follows_the_official_cub_setup():
    cfg = get_model_config(NAME)
    assert (cfg.input_size, cfg.num_classes, cfg.batch_dependent) == (448, 200, False)
    pre = cfg.preprocess
    assert (pre.resize_size, pre.crop_size, pre.resize_mode, pre.interpolation) == (600, 448, "exact", "bilinear")
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD


def test_an_image_output_does_not_depend_on_its_batch_mates(model):
    # The official code recurs over the batch; ours over the levels, so each image stands alone.
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    other = x.clone()
    other[0] = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batched, alone, changed = model(x), model(x[1:2]), model(other)
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(changed[1:], batched[1:], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(changed[0], batched[0], atol=1e-3)


def test_convlstm_reads_levels_from_high_to_low(model):
    f3, f4, f5 = levels()
    g3, g4, g5 = levels(seed=1)
    with torch.no_grad():
        base = model.fuse_high_to_low([f3, f4, f5])
        new_f3 = model.fuse_high_to_low([g3, f4, f5])
        new_f5 = model.fuse_high_to_low([f3, f4, g5])
    # F5 is read first, F3 last: changing F3 moves only the level-3 output, changing F5 moves all three.
    assert torch.equal(new_f3[1], base[1]) and torch.equal(new_f3[2], base[2])
    assert not torch.allclose(new_f3[0], base[0])
    assert all(not torch.allclose(a, b) for a, b in zip(new_f5, base))


def test_convlstm_gate_order_is_i_f_o_g():
    lstm = LevelConvLSTM(2)
    with torch.no_grad():
        lstm.gates.weight.zero_()
        # Gate pre-activations by chunk: i = +30 (open), f = 0 (half), o = -1, g = 0.5.
        lstm.gates.bias.copy_(torch.tensor([30.0] * 2 + [0.0] * 2 + [-1.0] * 2 + [0.5] * 2))
        hidden = lstm([torch.zeros(1, 2, 3, 3)] * 3)
    cell, expected = 0.0, []
    for _ in range(3):
        cell = 0.5 * cell + math.tanh(0.5)
        expected.append(1 / (1 + math.exp(1)) * math.tanh(cell))
    assert [h[0, 0, 1, 1].item() for h in hidden] == pytest.approx(expected, rel=1e-5)


def test_convlstm_first_step_equals_a_step_from_zero_state():
    torch.manual_seed(0)
    lstm = LevelConvLSTM(8)
    x = torch.randn(2, 8, 5, 5)
    zeros = torch.zeros_like(x)
    with torch.no_grad():
        for fast, full in zip(lstm.first_step(x), lstm.step(x, zeros, zeros)):
            torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)


def test_projecting_before_upsampling_equals_the_official_order(model):
    gen = torch.Generator().manual_seed(3)
    s3, s4, s5 = (torch.randn(2, c, s, s, generator=gen) for c, s in ((512, 8), (1024, 4), (2048, 2)))
    with torch.no_grad():
        f3, f4, f5 = model.pyramid(s3, s4, s5)
        official_f5 = model.lateral5(F.interpolate(s5, scale_factor=4))  # upsample, then SimpleFPA
        official_f4 = model.lateral4(F.interpolate(s4, scale_factor=2))
    assert f3.shape == f4.shape == f5.shape == (2, 256, 8, 8)
    torch.testing.assert_close(f5, official_f5, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f4, official_f4, rtol=1e-5, atol=1e-5)


def test_channel_masks_pass_from_low_to_high(model):
    f3, f4, f5 = levels(batch=2)
    with torch.no_grad():
        a3, a4, a5 = model.attend_low_to_high([f3, f4, f5])
        c3 = model.attention3.channel(f3)
        c4 = (model.attention4.channel(f4) + c3) / 2
        c5 = (model.attention5.channel(f5) + c4) / 2
        expected_a5 = torch.sigmoid(model.attention5.spatial(f5)) * f5 + c5 * f5
        g3 = levels(batch=2, seed=1)[0]
        moved = model.attend_low_to_high([g3, f4, f5])
    torch.testing.assert_close(a5, expected_a5)
    assert model.attention5.spatial(f5).shape == (2, 1, 4, 4)
    assert not torch.allclose(moved[2], a5)  # level 3 reaches level 5 ...
    g5 = levels(batch=2, seed=1)[2]
    with torch.no_grad():
        assert torch.equal(model.attend_low_to_high([f3, f4, g5])[0], a3)  # ... but never the other way


ABLATIONS = [
    # (switches, ConvLSTM?, attention?) — paper rows in the model's docstring
    ({}, True, True),  # Table 3, w/ ConvLSTM
    ({"high_to_low": "add"}, False, True),  # Table 2 HL+LH = Table 3 w/o ConvLSTM
    ({"high_to_low": "add", "low_to_high": False}, False, False),  # Table 2 HL
    ({"high_to_low": "none", "low_to_high": False}, False, False),  # no pathway (control)
]


@pytest.mark.parametrize("switches,has_lstm,has_attention", ABLATIONS)
def test_ablation_switches_build_the_tables_rows(switches, has_lstm, has_attention):
    model = build(**switches)
    assert model.model_args == switches
    assert (model.top_down is not None) == has_lstm
    assert hasattr(model, "attention3") == has_attention
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert model(x).shape == (2, NUM_CLASSES)
    f3, f4, f5 = levels()
    fused = model.fuse_high_to_low([f3, f4, f5])
    if switches.get("high_to_low") == "add":  # §3.3: FPN-style addition, high to low
        expected = [f3 + f4 + f5, f4 + f5, f5]
        assert all(torch.allclose(a, b) for a, b in zip(fused, expected))
    if switches.get("high_to_low") == "none":
        assert all(a is b for a, b in zip(fused, [f3, f4, f5]))


def test_ablations_differ_by_exactly_the_removed_modules():
    counts = [sum(p.numel() for p in build(**switches).parameters()) for switches, _, _ in ABLATIONS]
    assert counts[0] - counts[1] == 512 * 1024 * 9 + 1024  # the ConvLSTM's one conv
    assert counts[1] - counts[2] == 3 * ((256 * 9 + 1) + (256 * 16 + 16) + (16 * 256 + 256))  # three LevelAttentions
    assert counts[2] == counts[3]


def test_bad_switches_are_user_errors():
    with pytest.raises(UserInputError, match="high_to_low"):
        build(high_to_low="lstm")
    with pytest.raises(UserInputError, match="low_to_high"):
        build(low_to_high="yes")


def test_ablated_model_round_trips_through_a_checkpoint(tmp_path):
    model = build(high_to_low="add", low_to_high=False)
    randomize_batchnorm(model)
    restored = create_model(NAME, checkpoint=save_checkpoint(model, str(tmp_path / "ck")))
    assert restored.model_args == {"high_to_low": "add", "low_to_high": False} and restored.top_down is None
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))


def test_train_returns_four_heads_and_the_loss_sums_them():
    model = build()
    x, y = torch.randn(2, 3, SIZE, SIZE), torch.tensor([1, 5])
    outputs = model.train()(x)
    assert len(outputs) == 4 and all(o.shape == (2, NUM_CLASSES) for o in outputs)
    expected = sum(F.cross_entropy(o, y).item() for o in outputs)
    assert model.loss(outputs, y).item() == pytest.approx(expected, rel=1e-6)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch.stack(model.head_logits(x)).mean(0))


def test_head_width_follows_the_official_rule(model):
    assert model.head3.fc1.out_features == 256
    assert build(head_hidden=64).head_concat.fc1.out_features == 64
    assert create_model(NAME).head_concat.fc1.out_features == 512  # 200 classes


def official_state_dict(num_classes, hidden):
    """Random tensors under the official repo's key names and shapes (model/resnet50.py, read by hand)."""
    gen = torch.Generator().manual_seed(4)
    state = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}

    def batchnorm(prefix, n):
        for suffix in ("weight", "bias", "running_mean"):
            state[prefix + suffix] = torch.randn(n, generator=gen)
        state[prefix + "running_var"] = torch.rand(n, generator=gen) + 0.5
        state[prefix + "num_batches_tracked"] = torch.tensor(10)

    def tensor(key, *shape):
        state[key] = torch.randn(*shape, generator=gen) * 0.05

    for branch in ("conv_master", "conv_gpb"):
        tensor("fpn.F5_1.{}.conv.weight".format(branch), 256, 2048, 1, 1)
        batchnorm("fpn.F5_1.{}.bn.".format(branch), 256)
    for name, channels in (("F4_1", 1024), ("F3_1", 512)):
        tensor("fpn.{}.weight".format(name), 256, channels, 1, 1)
        tensor("fpn.{}.bias".format(name), 256)
    tensor("fpn.convlstm.cell_list.0.conv.weight", 1024, 512, 3, 3)
    tensor("fpn.convlstm.cell_list.0.conv.bias", 1024)
    for level in (3, 4, 5):
        tensor("apn.A{}_1.conv.weight".format(level), 256, 1, 3, 3)
        tensor("apn.A{}_1.conv.bias".format(level), 1)
        tensor("apn.A{}_2.conv1.weight".format(level), 16, 256, 1, 1)
        tensor("apn.A{}_2.conv1.bias".format(level), 16)
        tensor("apn.A{}_2.conv2.weight".format(level), 256, 16, 1, 1)
        tensor("apn.A{}_2.conv2.bias".format(level), 256)
    for prefix, (bn_in, fc1, bn_hidden, fc2), width in [
        ("cls{}.".format(level), (2, 3, 4, 6), 256) for level in (3, 4, 5)
    ] + [("cls_concate.", (1, 2, 3, 5), 768)]:
        batchnorm("{}{}.".format(prefix, bn_in), width)
        tensor("{}{}.weight".format(prefix, fc1), hidden, width)
        tensor("{}{}.bias".format(prefix, fc1), hidden)
        batchnorm("{}{}.".format(prefix, bn_hidden), hidden)
        tensor("{}{}.weight".format(prefix, fc2), num_classes, hidden)
        tensor("{}{}.bias".format(prefix, fc2), num_classes)
    return state


def _is_parameter(key):
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def test_official_state_dict_loads_with_every_tensor_in_place():
    official = official_state_dict(200, 512)
    model = load_official_state_dict(official)
    ours = model.state_dict()
    assert model.config.num_classes == 200 and not model.training
    assert sum(p.numel() for p in model.parameters()) == 30_909_331
    assert sum(v.numel() for k, v in official.items() if _is_parameter(k)) == 30_909_331
    pairs = {
        "layer4.2.conv3.weight": "backbone.layer4.2.conv3.weight",
        "fpn.F5_1.conv_gpb.bn.running_var": "lateral5.context.1.running_var",
        "fpn.F3_1.bias": "lateral3.bias",
        "fpn.convlstm.cell_list.0.conv.weight": "top_down.gates.weight",
        "apn.A4_1.conv.weight": "attention4.spatial.weight",
        "apn.A5_2.conv2.bias": "attention5.channel.expand.bias",
        "cls3.4.running_mean": "head3.norm_hidden.running_mean",
        "cls5.6.weight": "head5.fc2.weight",
        "cls_concate.1.weight": "head_concat.norm_in.weight",
    }
    for official_key, our_key in pairs.items():
        assert torch.equal(ours[our_key], official[official_key]), official_key
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, SIZE, SIZE))).all()


def test_official_checkpoint_file_gives_class_count_and_head_width(tmp_path):
    path = tmp_path / "model_best.pth"
    # Stanford Cars: 196 classes, hidden 256; legacy (pre-1.6) format, as the official torch 0.4.1 writes.
    torch.save(official_state_dict(196, 256), path, _use_new_zipfile_serialization=False)
    model = load_official_checkpoint(NAME, str(path))
    assert model.config.num_classes == 196 and model.head3.fc1.out_features == 256
    assert model.model_args == {}
    with pytest.raises(UserInputError, match="196 classes"):
        load_official_checkpoint(NAME, str(path), num_classes=200)


def test_foreign_or_pickled_files_are_refused(tmp_path):
    official = official_state_dict(200, 512)
    with pytest.raises(UserInputError, match="unknown keys"):
        convert_official_state_dict({**official, "fc.weight": torch.zeros(200, 2048)})
    missing = {k: v for k, v in official.items() if not k.startswith("apn.A4_1.")}
    with pytest.raises(UserInputError, match="2 missing"):
        load_official_state_dict(missing)
    for legacy in (False, True):  # both torch file formats, through the reader every importer shares
        pickled = tmp_path / "whole_module_{}.pth".format(legacy)
        torch.save(torch.nn.Linear(2, 2), pickled, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UserInputError) as refused:
            load_official_checkpoint(NAME, str(pickled))
        message = str(refused.value)
        # Our own one line: what was refused, never torch's advice to disable weights_only, no terminal codes.
        assert message == "refusing to load {}: it references torch.nn.modules.linear.Linear, which is not a " \
                          "tensor or an allowed module class".format(pickled)
        assert "weights_only" not in message and "\x1b" not in message
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(UserInputError, match="is not a torch.save file"):
        load_official_checkpoint(NAME, str(tmp_path / "text.pth"))
    with pytest.raises(UserInputError, match="no such file"):
        load_official_checkpoint(NAME, str(tmp_path / "absent.pth"))


# -- official arithmetic on real photos -----------------------------------------------------------------------


class _OfficialBasicConv(torch.nn.Module):
    """model/resnet50.py's BasicConv: conv (no bias) → BN(momentum 0.01) → ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _OfficialSimpleFPA(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_master = _OfficialBasicConv(2048, 256)
        self.conv_gpb = _OfficialBasicConv(2048, 256)

    def forward(self, x):
        return self.conv_master(x) + self.conv_gpb(F.avg_pool2d(x, x.shape[2:]))


class _OfficialCell(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(512, 1024, 3, padding=1)

    def forward(self, x, h, c):
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), 256, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _OfficialConvLSTM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cell_list = torch.nn.ModuleList([_OfficialCell()])

    def forward(self, sequence):
        """(b, t, C, H, W) with batch_first=True; the hidden state of every step."""
        h = c = sequence.new_zeros(sequence.shape[0], 256, *sequence.shape[3:])
        steps = []
        for t in range(sequence.shape[1]):
            h, c = self.cell_list[0](sequence[:, t], h, c)
            steps.append(h)
        return torch.stack(steps, dim=1)


class _OfficialFPN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.F5_1 = _OfficialSimpleFPA()
        self.F4_1 = torch.nn.Conv2d(1024, 256, 1)
        self.F3_1 = torch.nn.Conv2d(512, 256, 1)
        self.convlstm = _OfficialConvLSTM()

    def forward(self, b3, b4, b5):
        f5 = self.F5_1(F.interpolate(b5, scale_factor=4))  # nearest ×4, then the projection
        f4 = self.F4_1(F.interpolate(b4, scale_factor=2))
        f3 = self.F3_1(b3)
        # The level recurrence the paper means (F5 → F4 → F3 per image); the released code stacks the levels on
        # dim 0 of a batch_first ConvLSTM and so recurs over the images of the batch.
        out = self.convlstm(torch.stack([f5, f4, f3], dim=1))
        return out[:, 2], out[:, 1], out[:, 0]


class _OfficialGates(torch.nn.Module):
    def __init__(self, spatial):
        super().__init__()
        if spatial:
            self.conv = torch.nn.ConvTranspose2d(256, 1, 3, padding=1)
        else:
            self.conv1 = torch.nn.Conv2d(256, 16, 1)
            self.conv2 = torch.nn.Conv2d(16, 256, 1)

    def forward(self, x):
        if hasattr(self, "conv"):
            return torch.sigmoid(self.conv(x))
        return torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(x, 1)))))


class _OfficialAPN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for level in (3, 4, 5):
            setattr(self, "A{}_1".format(level), _OfficialGates(True))
            setattr(self, "A{}_2".format(level), _OfficialGates(False))

    def forward(self, f3, f4, f5):
        c3 = self.A3_2(f3)
        c4 = (self.A4_2(f4) + c3) / 2
        c5 = (self.A5_2(f5) + c4) / 2
        return [self.A3_1(f3) * f3 + c3 * f3, self.A4_1(f4) * f4 + c4 * f4, self.A5_1(f5) * f5 + c5 * f5]


def _official_head(width, hidden, pooled):
    layers = [torch.nn.AdaptiveAvgPool2d(1)] if pooled else []
    layers += [torch.nn.Flatten(), torch.nn.BatchNorm1d(width), torch.nn.Linear(width, hidden),
               torch.nn.BatchNorm1d(hidden), torch.nn.ELU(), torch.nn.Linear(hidden, NUM_CLASSES)]
    return torch.nn.Sequential(*layers)


class OfficialCNCNN(torch.nn.Module):
    """model/resnet50.py's ResNet (keys and arithmetic) with the level recurrence; returns the four heads."""

    def __init__(self):
        super().__init__()
        trunk = torchvision.models.resnet50()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(trunk, name))
        self.fpn = _OfficialFPN()
        self.apn = _OfficialAPN()
        for level in (5, 4, 3):
            setattr(self, "cls{}".format(level), _official_head(256, 256, pooled=True))
        self.cls_concate = _official_head(768, 256, pooled=False)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x2 = self.layer2(self.layer1(x))
        x3 = self.layer3(x2)
        f3, f4, f5 = self.fpn(x2, x3, self.layer4(x3))
        a3, a4, a5 = self.apn(f3, f4, f5)
        concat = torch.cat([F.adaptive_avg_pool2d(f, 1) for f in (f3, f4, f5)], dim=1)
        return self.cls3(a3), self.cls4(a4), self.cls5(a5), self.cls_concate(concat)


def test_imported_weights_on_photos_equal_the_official_arithmetic(real_images, tmp_path):
    # 96 px: layer2/3/4 at 12/6/3 px, so the official ×4 / ×2 nearest upsamplings meet layer2's size exactly.
    size = 96
    torch.manual_seed(5)
    official = OfficialCNCNN()
    photos = real_images.photo_batch(real_images.PHOTO_NAMES, get_model_config(NAME).preprocess.for_input_size(size))
    real_images.set_bn_statistics(official, photos)
    path = tmp_path / "model_best.pth"
    torch.save(official.state_dict(), str(path), _use_new_zipfile_serialization=False)  # as torch 0.4.1 wrote it
    model = load_official_checkpoint(NAME, str(path))
    with torch.no_grad():
        expected = official(photos)
        heads = model.head_logits(photos)
        prediction = model(photos)
    assert len(set(sum(expected).argmax(dim=1).tolist())) >= 3  # the photos are told apart
    for ours, theirs in zip(heads, expected):
        error = (ours - theirs).abs().amax(dim=1) / theirs.abs().amax(dim=1)
        # Projection before the nearest upsampling (they commute) and pooling orders differ: float32 rounding only.
        assert error.max().item() <= 2e-5, error
    assert torch.allclose(prediction, sum(expected) / 4, rtol=0, atol=2e-5 * float(sum(expected).abs().max()))
