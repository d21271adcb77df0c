"""The serving stage imports the runtime and the contract only — never torch or an upstream stage — and stays
valid Python 3.8, like the runtime it serves."""
import ast
import json
import os
import subprocess
import sys
import textwrap

import fgvc_edge.serve

SERVE = os.path.dirname(fgvc_edge.serve.__file__)
ALLOWED = ("fgvc_edge.runtime", "fgvc_edge.contract", "fgvc_edge.serve", "fgvc_edge.errors", "fgvc_edge._io")


def imported_modules(path):
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    for node in ast.walk(tree):  # function-level imports included
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def serve_sources():
    for folder, _, files in os.walk(SERVE):
        yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


def test_serve_imports_only_runtime_and_contract():
    for path in serve_sources():
        ours = [m for m in imported_modules(path) if m.split(".")[0] == "fgvc_edge"]
        assert all(m.startswith(ALLOWED) for m in ours), (path, ours)
        assert not {"torch", "torchvision", "typer", "onnx"} & {m.split(".")[0] for m in imported_modules(path)}, path


def test_serve_runs_without_torch(artifacts, tmp_path):
    script = textwrap.dedent(
        """
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "typer", "onnx", "onnxsim", "fvcore"):
                    raise ImportError("blocked for this test: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from fgvc_edge.runtime import load
        from fgvc_edge.serve import ServedModel, write_triton_repository
        served = ServedModel(load({onnx!r}), "m")
        answer = served([{{"input": np.zeros((2, 3, 32, 32), np.float32)}}])[0]
        result = write_triton_repository([{onnx!r}], {out!r})
        print(json.dumps({{"shape": list(answer["logits"].shape), "models": result.models,
                          "torch": "torch" in sys.modules}}))
        """
    ).format(onnx=artifacts["resnet"], out=str(tmp_path / "repo"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"shape": [2, 4], "models": ["birds_r18", "birds_r18_preprocess", "birds_r18_ensemble"],
                      "torch": False}


def test_serve_source_is_python38_valid():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    cmd = [vermin, "--no-tips", "--violations", "-t=3.8-", "--eval-annotations", "--backport", "dataclasses",
           "--backport", "typing", SERVE]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
