"""Class 9: artifacts get the mode any file the user creates gets (0666 & ~umask), whatever the writer did."""
import os
import stat

import pytest


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_checkpoint_and_onnx_files_follow_the_umask(umask_027, tmp_path):
    from fgvc_edge.checkpoint import save_checkpoint
    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    model = create_model("resnet18", num_classes=3, input_size=32)
    folder = save_checkpoint(model, str(tmp_path / "ck"), training_state={"epoch": 1})
    assert mode(folder) == 0o750
    for name in ("model.safetensors", "fgvc.json", "training_state.pt"):
        assert mode(os.path.join(folder, name)) == 0o640, name
    result = export_onnx(model, str(tmp_path / "m.onnx"))
    assert mode(result.path) == 0o640 and mode(result.sidecar) == 0o640


def test_a_file_a_library_replaces_with_0600_gets_the_umask_mode(umask_027, tmp_path):
    from fgvc_edge._io import atomic_path

    target = tmp_path / "weights.bin"
    with atomic_path(str(target)) as tmp:
        # What safetensors does: write its own file and move it over the path it was given.
        other = str(tmp) + ".own"
        with open(other, "wb") as fh:
            fh.write(b"w")
        os.chmod(other, 0o600)
        os.replace(other, tmp)
    assert mode(target) == 0o640
