"""Backbone weights from local files (torchvision / timm-ResNet formats, wrappers, prefixes, legacy DenseNet keys),
the report of what did not fit, refusal of pickled code, and official checkpoints through the model importers."""
import re

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from fgvc_edge.errors import UserInputError
from fgvc_edge.importers import IMPORTERS
from fgvc_edge.importers.backbone import load_backbone_weights, read_state_dict
from fgvc_edge.models import create_model
from fgvc_edge.train.trainer import TrainOptions, _fresh_run


class NotATensor:
    pass


@pytest.fixture(scope="module")
def imagenet_resnet18():
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=1000).state_dict()


def test_torchvision_resnet_into_a_backbone_with_dataparallel_wrapper(tmp_path, imagenet_resnet18):
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in imagenet_resnet18.items()}, "epoch": 90}, path)
    model = create_model("care_resnet18", num_classes=3, input_size=32)
    report = load_backbone_weights(model, str(path))
    assert report.target == "backbone" and not report.missing and not report.mismatched
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert len(report.loaded) == len(model.backbone.state_dict())
    assert torch.equal(model.backbone.layer3[1].conv2.weight, imagenet_resnet18["layer3.1.conv2.weight"])
    assert "loaded 120 of 120 tensors of backbone" in report.summary()


def test_whole_model_target_reports_the_head_shape_mismatch(tmp_path, imagenet_resnet18):
    # timm's ResNet uses torchvision's names, so a timm resnet18 file is this same case.
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet_resnet18.items()}, str(path))
    model = create_model("resnet18", num_classes=3, input_size=32)
    fc_before = model.fc.weight.detach().clone()
    report = load_backbone_weights(model, str(path))
    assert report.target == "model"
    assert report.mismatched == [("fc.weight", (1000, 512), (3, 512)), ("fc.bias", (1000,), (3,))]
    assert torch.equal(model.fc.weight, fc_before)  # what does not fit is left alone
    assert torch.equal(model.conv1.weight, imagenet_resnet18["conv1.weight"])
    assert "2 shape mismatch (e.g. fc.weight: file [1000, 512] vs model [3, 512])" in report.summary()


def test_legacy_torchvision_densenet_keys_are_renamed(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.densenet121(num_classes=1000).state_dict()
    # torchvision's published densenet121 file still has the pre-0.3 names, e.g. "denselayer1.norm.1.weight".
    # (and, predating torch 0.4, no BatchNorm num_batches_tracked counters).
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|conv))(\d)\.", r"\1.\2.", k): v for k, v in reference.items()
              if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    path = tmp_path / "densenet121-legacy.pth"
    torch.save(legacy, path)
    model = create_model("rbi_densenet121", num_classes=3, input_size=32)
    report = load_backbone_weights(model, str(path))
    assert not report.missing and not report.unexpected
    assert [key for key, _, _ in report.mismatched] == ["classifier.weight", "classifier.bias"]  # 1000 vs 1024-d embedding
    assert torch.equal(model.backbone.features.denseblock2.denselayer3.norm1.weight,
                       reference["features.denseblock2.denselayer3.norm1.weight"])


def test_pickled_code_and_unrelated_files_are_refused(tmp_path):
    pickled = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": NotATensor()}, pickled)
    with pytest.raises(UserInputError, match="NotATensor, which is not a tensor") as refused:
        read_state_dict(str(pickled))
    assert "weights_only" not in str(refused.value)
    unrelated = tmp_path / "other.pth"
    torch.save({"encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, unrelated)
    with pytest.raises(UserInputError, match="fits nothing in backbone"):
        load_backbone_weights(create_model("care_resnet18", num_classes=3, input_size=32), str(unrelated))


def test_train_reports_the_backbone_import(tiny_cub, tmp_path, imagenet_resnet18):
    path = tmp_path / "r18.pth"
    torch.save(imagenet_resnet18, path)
    run = _fresh_run(TrainOptions(model="care_resnet18", data=str(tiny_cub), backbone_weights=str(path), input_size=32))
    assert run.backbone_report["loaded"] == 120 and run.backbone_report["unexpected"] == ["fc.weight", "fc.bias"]
    assert any(note.startswith("loaded 120 of 120") for note in run.notes)


def _official_cmal_keys(state):
    renames = [(r"^backbone\.conv1\.", "Features.net_layer_0.0."), (r"^backbone\.bn1\.", "Features.net_layer_1.0."),
               (r"^backbone\.layer(\d)\.", lambda m: "Features.net_layer_{}.".format(int(m.group(1)) + 3)),
               (r"^blocks\.(\d)\.", lambda m: "conv_block{}.".format(int(m.group(1)) + 1)),
               (r"^heads\.(\d)\.", lambda m: "classifier{}.".format(int(m.group(1)) + 1)),
               (r"^concat_head\.", "classifier_concat.")]
    out = {}
    for key, value in state.items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def test_official_cmal_checkpoint_starts_a_run(tiny_cub, tmp_path):
    torch.manual_seed(3)
    trained = create_model("cmal_resnet18", num_classes=3, input_size=64)
    path = tmp_path / "model.pth"
    torch.save(_official_cmal_keys(trained.state_dict()), path)
    run = _fresh_run(TrainOptions(model="cmal_resnet18", data=str(tiny_cub), official_checkpoint=str(path)))
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(UserInputError, match="not both"):
        _fresh_run(TrainOptions(model="cmal_resnet18", data=str(tiny_cub), official_checkpoint=str(path),
                                checkpoint=str(path)))


def test_official_cncnn_checkpoint_starts_a_run(tiny_cub, tmp_path):
    from fgvc_edge.importers.cncnn import _renames

    torch.manual_seed(4)
    trained = create_model("cncnn_resnet50", num_classes=3, input_size=32)
    official = {}
    for key, value in trained.state_dict().items():
        if key.startswith("backbone."):
            official[key[len("backbone."):]] = value
            continue
        theirs, ours = next((t, o) for t, o in _renames() if key.startswith(o))
        official[theirs + key[len(ours):]] = value
    path = tmp_path / "model_best.pth"
    torch.save(official, path)
    run = _fresh_run(TrainOptions(model="cncnn_resnet50", data=str(tiny_cub), official_checkpoint=str(path)))
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), trained.state_dict().values()))
