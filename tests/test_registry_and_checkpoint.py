import json

import pytest
import torch

from fgvc_edge.bench import papers
from fgvc_edge.checkpoint import load_training_state, read_checkpoint, save_checkpoint
from fgvc_edge.errors import UserInputError
from fgvc_edge.models import create_model, get_model_config, list_models, register_model


def test_unknown_model_suggests_close_names():
    with pytest.raises(UserInputError, match="did you mean resnet18"):
        create_model("resnet81")


def test_duplicate_registration_is_an_error():
    from fgvc_edge.models._registry import registered_builders

    assert "resnet18" in registered_builders()
    with pytest.raises(ValueError, match="twice"):
        register_model("resnet18")(lambda **kw: None)
    with pytest.raises(UserInputError, match="unknown model"):  # a builder needs a config (data) first
        register_model("resnet19")(lambda **kw: None)


def test_bad_sizes_are_refused():
    with pytest.raises(UserInputError):
        create_model("resnet18", num_classes=0)
    with pytest.raises(UserInputError):
        create_model("resnet18", input_size=8)


@pytest.mark.parametrize("name", list_models())
def test_paper_rows_point_at_this_model(name):
    for rid in get_model_config(name).paper_rows:
        row = papers.paper_row(rid)
        assert row["model"] == name
        for key in ("input_size", "num_classes", "params", "source"):
            assert row[key], (rid, key)
        if row.get("baseline"):
            assert row["baseline"] in papers.paper_rows()


def test_torchvision_parameter_counts_match_torchvision_meta():
    # torchvision's ImageNet weights meta: resnet18 11,689,512, resnet50 25,557,032 parameters.
    assert sum(p.numel() for p in create_model("resnet18", num_classes=1000).parameters()) == 11_689_512
    assert sum(p.numel() for p in create_model("resnet50", num_classes=1000).parameters()) == 25_557_032


def test_checkpoint_files_and_training_state(tmp_path):
    model = create_model("resnet18", num_classes=3, input_size=48)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    model.loss(model(torch.randn(2, 3, 48, 48)), torch.tensor([0, 2])).backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "epoch": 3, "rng": torch.get_rng_state()}
    folder = save_checkpoint(model, str(tmp_path / "ck"), class_names=["x", "y", "z"], training_state=state)
    record = json.loads((tmp_path / "ck" / "fgvc.json").read_text())
    assert record["model"] == "resnet18" and record["num_classes"] == 3 and record["input_size"] == 48
    assert record["class_names"] == ["x", "y", "z"]
    assert record["preprocess"]["crop_size"] == 48
    assert record["structure"] == {"transforms": [], "num_params": sum(p.numel() for p in model.parameters())}
    loaded = load_training_state(folder)  # weights_only=True inside
    assert loaded["epoch"] == 3 and torch.equal(loaded["rng"], state["rng"])
    # --checkpoint may name the weights file too.
    rec, tensors = read_checkpoint(str(tmp_path / "ck" / "model.safetensors"))
    assert rec["model"] == "resnet18" and "fc.weight" in tensors


def test_checkpoint_mismatches_are_user_errors(tmp_path):
    folder = save_checkpoint(create_model("resnet18", num_classes=3), str(tmp_path / "ck"))
    with pytest.raises(UserInputError, match="holds 'resnet18', not 'resnet50'"):
        create_model("resnet50", checkpoint=folder)
    with pytest.raises(UserInputError, match="has 3 classes"):
        create_model("resnet18", checkpoint=folder, num_classes=4)
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UserInputError, match="cannot read"):
        create_model("resnet18", checkpoint=folder)


def test_unknown_structure_transform_is_refused(tmp_path):
    folder = save_checkpoint(create_model("resnet18", num_classes=3), str(tmp_path / "ck"))
    record_path = tmp_path / "ck" / "fgvc.json"
    record = json.loads(record_path.read_text())
    record["structure"]["transforms"] = [{"name": "quantum_prune"}]
    record_path.write_text(json.dumps(record))
    with pytest.raises(UserInputError, match="quantum_prune"):
        create_model("resnet18", checkpoint=folder)
