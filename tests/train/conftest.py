import importlib.util
import pathlib

import pytest

# tests/tiny_data.py, loaded by path (the suite runs with --import-mode=importlib: no package imports).
_SPEC = importlib.util.spec_from_file_location("tiny_data", pathlib.Path(__file__).parents[1] / "tiny_data.py")
tiny_data = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tiny_data)


@pytest.fixture
def tiny():
    return tiny_data


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on 2 cores shared with other jobs, 2 spinning OpenMP threads run ~30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_cub(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    tiny_data.write_cub(str(root), classes=3, train_per_class=8, test_per_class=4, size=40)
    return root
