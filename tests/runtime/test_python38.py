"""JetPack 5 for real: the runtime installed alone (``.[onnxruntime]``) into a Python 3.8 venv reproduces the
toolkit's logits on an ONNX the toolkit exported. Skipped where no Python 3.8 interpreter (pyenv) is found."""
import glob
import json
import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

import fgvc_edge

ROOT = os.path.dirname(os.path.dirname(fgvc_edge.__file__))


def python38() -> str:
    """A CPython 3.8 from pyenv (``$(pyenv root)/versions/3.8.*``), or ''."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        root = out.stdout.strip() or root
    found = sorted(glob.glob(os.path.join(root, "versions", "3.8.*", "bin", "python3.8")))
    return found[-1] if found else ""


PYTHON38 = python38()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=4, input_size=32)
    model.class_names = ["a", "b", "c", "d"]
    path = str(tmp_path_factory.mktemp("py38") / "r18.onnx")
    export_onnx(model, path, batch="dynamic")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        logits = model.eval()(torch.from_numpy(x)).numpy()
    return path, x, logits


def _package_copy(folder: str) -> str:
    """What `pip install <root>` builds from (pyproject, README, the package), copied so that the build's
    egg-info/build folders land outside the worktree."""
    source = os.path.join(folder, "src")
    os.makedirs(source)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source)
    shutil.copytree(os.path.join(ROOT, "fgvc_edge"), os.path.join(source, "fgvc_edge"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return source


def _release(version: str) -> tuple:
    return tuple(int(part) for part in version.split(".")[:2])


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON38, reason="no Python 3.8 interpreter ($(pyenv root)/versions/3.8.*)")
def test_runtime_on_python38_matches_the_toolkit(exported, tmp_path):
    from PIL import Image

    from fgvc_edge.runtime import OnnxRunner

    path, x, torch_logits = exported
    np.save(tmp_path / "x.npy", x)
    image = tmp_path / "bird.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    venv = str(tmp_path / "venv")
    subprocess.run([PYTHON38, "-m", "venv", venv], check=True, timeout=120)
    python = os.path.join(venv, "bin", "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", _package_copy(str(tmp_path)) + "[onnxruntime]"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, onnxruntime
        from fgvc_edge.runtime import load
        with load({path!r}) as runner:
            logits = runner.infer(np.load({x!r}))
            top = runner.predict([{image!r}], topk=2)[0]
        print(json.dumps({{"python": sys.version_info[:2], "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
                          "logits": logits.tolist(), "top": [[p.label, p.prob] for p in top],
                          "torch": "torch" in sys.modules}}))
        """
    ).format(path=path, x=str(tmp_path / "x.npy"), image=str(image))
    out = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["python"] == [3, 8] and result["torch"] is False
    # What pyproject pins for 3.8 (markers), as pip resolved it: ONNX Runtime 1.19.x, NumPy 1.24.x at most.
    assert _release(result["onnxruntime"]) < (1, 20) and _release(result["numpy"]) < (1, 25)
    logits = np.array(result["logits"], np.float32)
    with OnnxRunner(path) as toolkit:
        toolkit_logits = toolkit.infer(x)
        toolkit_top = toolkit.predict([str(image)], topk=2)[0]
    assert np.abs(logits - toolkit_logits).max() <= 1e-5
    assert np.abs(logits - torch_logits).max() <= 1e-5
    assert [label for label, _ in result["top"]] == [p.label for p in toolkit_top]
    np.testing.assert_allclose([prob for _, prob in result["top"]], [p.prob for p in toolkit_top], atol=1e-6)
