import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def single_torch_thread():
    """One intra-op thread: these tests run many small forwards on 2 shared cores, where a second thread
    mostly waits on the other processes (measured 0.12 s vs 0.8-7 s per ACANet forward at 64 px)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
