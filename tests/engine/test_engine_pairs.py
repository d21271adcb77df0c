"""An engine and its sidecar become visible together (the engine is built into the pair's temporary file);
a sidecar that is not its engine's is refused by the TensorRT runner, saying to rebuild."""
import os

import pytest

from fgvc_edge.engine import BatchProfile, BuildSettings, build
from fgvc_edge.errors import UserInputError
from fgvc_edge.runtime import read_sidecar
from fgvc_edge.runtime.tensorrt_runner import TensorRTRunner


class Crash(BaseException):
    pass


def test_a_crash_between_the_renames_of_an_engine_build_is_refused(fake_gpu_stack, tiny_onnx, tmp_path, monkeypatch):
    fake_gpu_stack("10.13")
    out = str(tmp_path / "m.engine")
    cache = str(tmp_path / "cache")
    build(tiny_onnx["fixed"], BuildSettings("fp32", intermediate_dir=cache), output=out)
    with TensorRTRunner(out) as runner:
        assert runner.fixed_batch == 1
    old = open(out, "rb").read()

    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.abspath(dst) == os.path.abspath(out):
            raise Crash()
        return real(src, dst, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(Crash):
            build(tiny_onnx["dynamic"], BuildSettings("fp32", profile=BatchProfile(1, 2, 4), intermediate_dir=cache),
                  output=out)
    assert open(out, "rb").read() == old and read_sidecar(out)["batch_profile"] == {"min": 1, "opt": 2, "max": 4}
    with pytest.raises(UserInputError, match=r"does not belong to .*sha256 differs.*rebuild it") as info:
        TensorRTRunner(out)
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["m.engine", "m.engine.json", "m_labels.txt", "m_nvinfer.txt"]  # no leftovers
