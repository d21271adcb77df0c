import os

import pytest

# Keep the suite fast and deterministic on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    # `gpu` tests skip wherever CUDA + TensorRT are absent, even when selected with `-m gpu`.
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skipif(not _has_gpu(), reason="needs CUDA and TensorRT"))


def _has_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False
