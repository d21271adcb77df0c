"""The runtime installs and runs on a Jetson without torch or typer, and stays valid Python 3.8."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fgvc_edge

PACKAGE = os.path.dirname(fgvc_edge.__file__)
RUNTIME_FILES = [
    os.path.join(PACKAGE, "__init__.py"),
    os.path.join(PACKAGE, "errors.py"),
    os.path.join(PACKAGE, "_io.py"),
    os.path.join(PACKAGE, "_version.py"),
    os.path.join(PACKAGE, "contract"),
    os.path.join(PACKAGE, "runtime"),
]

BLOCKER = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "typer", "torchvision", "onnx", "onnxsim", "fvcore"):
                raise ImportError("blocked for this test: " + name)
            return None
    sys.meta_path.insert(0, _Block())
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from fgvc_edge.checkpoint import save_checkpoint  # noqa: F401  (toolkit side of the test)
    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    model = create_model("resnet18", num_classes=4, input_size=32)
    model.class_names = ["a", "b", "c", "d"]
    path = str(tmp_path_factory.mktemp("rt") / "r18.onnx")
    export_onnx(model, path, batch="dynamic")
    return path


def test_runtime_runs_without_torch_or_typer(exported, tmp_path):
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    script = BLOCKER + textwrap.dedent(
        """
        import json, numpy as np
        from fgvc_edge.runtime import load
        with load({path!r}) as runner:
            logits = runner.infer(np.zeros((3, 3, 32, 32), np.float32))
            top = runner.predict([{image!r}], topk=2)[0]
        print(json.dumps({{"shape": list(logits.shape), "labels": [p.label for p in top],
                          "torch": "torch" in sys.modules, "typer": "typer" in sys.modules}}))
        """
    ).format(path=exported, image=str(image))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [3, 4]
    assert set(result["labels"]) <= {"a", "b", "c", "d"} and len(result["labels"]) == 2
    assert result["torch"] is False and result["typer"] is False


ENGINE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine")


def test_tensorrt_runner_runs_without_torch_or_typer(exported, tmp_path):
    """An .engine through the stand-in tensorrt/pycuda (tests/engine/fake_tensorrt.py), torch blocked."""
    sys.path.insert(0, ENGINE_DIR)
    try:
        from fake_tensorrt import make_tensorrt
    finally:
        sys.path.remove(ENGINE_DIR)
    from fgvc_edge.contract.sidecar import write_sidecar
    from fgvc_edge.engine.tensorrt_builder import BatchProfile, GpuInfo, TensorRTSettings, build_engine
    from fgvc_edge.runtime import OnnxRunner, read_sidecar

    engine = str(tmp_path / "r18.engine")
    facts = build_engine(exported, engine, TensorRTSettings("fp16", BatchProfile(1, 2, 4)),
                         trt=make_tensorrt("8.5", {}), gpu=GpuInfo("Orin", "8.7"))
    write_sidecar(engine, dict(read_sidecar(exported), **facts))
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with OnnxRunner(exported) as reference:
        expected = reference.infer(x)
    script = BLOCKER + textwrap.dedent(
        """
        import json, numpy as np
        sys.path.insert(0, {engine_dir!r})
        from fake_tensorrt import make_pycuda, make_tensorrt
        memory = {{}}
        sys.modules["tensorrt"] = make_tensorrt("8.5", memory)
        pycuda = type(sys)("pycuda")
        pycuda.driver = sys.modules["pycuda.driver"] = make_pycuda(memory)
        sys.modules["pycuda"] = pycuda
        from fgvc_edge.runtime import load
        with load({path!r}) as runner:
            logits = runner.infer(np.load({x!r}))
        print(json.dumps({{"logits": logits.tolist(), "runner": type(runner).__name__,
                          "torch": "torch" in sys.modules, "typer": "typer" in sys.modules}}))
        """
    ).format(engine_dir=ENGINE_DIR, path=engine, x=str(tmp_path / "x.npy"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["runner"] == "TensorRTRunner" and result["torch"] is False and result["typer"] is False
    np.testing.assert_allclose(np.array(result["logits"], np.float32), expected, rtol=1e-5, atol=1e-5)


def test_runtime_source_is_python38_valid():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    assert os.path.exists(vermin), "vermin is part of the dev extra"
    cmd = [vermin, "--no-tips", "--violations", "-t=3.8-", "--eval-annotations", "--feature", "union-types",
           "--backport", "dataclasses", "--backport", "typing"] + RUNTIME_FILES
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
