import importlib.util
import os
import pathlib

import pytest

# Keep the suite fast and deterministic on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Commands print no progress lines in tests (whose one-line-error checks read stdout and stderr together);
# tests of the progress lines themselves unset it.
os.environ["FGVC_EDGE_QUIET"] = "1"


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


def _load_helper(name):
    """A helper module of tests/ loaded by path: the suite runs with --import-mode=importlib."""
    spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).parent / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# tests/tiny_data.py: small generated data sets.
tiny_data = _load_helper("tiny_data")


@pytest.fixture(scope="session")
def tiny():
    return tiny_data


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on 2 cores shared with other jobs, 2 spinning OpenMP threads run ~30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# tests/real_images.py: scikit-image's bundled photos, BN statistics measured on them.
real_images_module = _load_helper("real_images")


@pytest.fixture(scope="session")
def real_images():
    return real_images_module
