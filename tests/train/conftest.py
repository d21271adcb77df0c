import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny_cub(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    tiny.write_cub(str(root), classes=3, train_per_class=8, test_per_class=4, size=40)
    return root
