"""Class 6: nothing blocks forever — a FIFO named like an image is not an image; bench --iters is bounded."""
import os
import threading

import pytest
from typer.testing import CliRunner

from fgvc_edge.cli import app


@pytest.fixture
def fifo_in(tmp_path):
    """Make a FIFO ``name`` in ``folder``; at the end it is opened for writing, so a reader stuck on it returns."""
    made = []

    def make(folder, name="fifo.jpg"):
        path = os.path.join(str(folder), name)
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    for path in made:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # releases a blocked open(path, "rb")
        os.close(fd)


def within(seconds, fn, *args):
    """fn(*args), failing the test (instead of hanging it) when it takes longer than ``seconds``."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "{} blocked for more than {} s".format(getattr(fn, "__name__", fn), seconds)
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_fifo_in_a_calibration_folder_is_not_an_image(tmp_path, tiny, fifo_in):
    from fgvc_edge.precision import select_images

    for i in range(8):
        tiny.tiny_image(i % 3, i).save(tmp_path / "{}.png".format(i))
    fifo = fifo_in(tmp_path)
    chosen = within(30, select_images, str(tmp_path), 512)
    assert len(chosen) == 8 and fifo not in chosen


def test_a_fifo_in_a_training_folder_is_not_an_image(tiny_folder, fifo_in):
    from fgvc_edge.datasets import load_dataset

    fifo = fifo_in(tiny_folder / "train" / "class_a")
    data = within(30, load_dataset, str(tiny_folder))
    assert fifo not in [path for path, _ in data.train] and len(data.train) == 24


def test_a_fifo_listed_by_annotations_is_skipped_by_the_loaders(tmp_path, tiny, fifo_in):
    from fgvc_edge.datasets import load_dataset, open_image

    root = tmp_path / "CUB_200_2011"
    tiny.write_cub(str(root), classes=2, train_per_class=2, test_per_class=1)
    listed = load_dataset(str(root)).train[0][0]
    os.unlink(listed)
    fifo_in(os.path.dirname(listed), os.path.basename(listed))
    assert within(30, open_image, listed) is None  # skipped and counted, like an unreadable file


def test_predict_on_a_fifo_is_one_line(r18_copy, tmp_path, fifo_in):
    fifo = fifo_in(tmp_path)
    result = within(60, CliRunner().invoke, app, ["predict", fifo, "--model", r18_copy])
    assert result.exit_code == 2 and "not a regular file" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bench_iters_are_bounded_and_ctrl_c_is_one_line(r18_copy, monkeypatch):
    result = CliRunner().invoke(app, ["bench", r18_copy, "--iters", "1000000000"])
    assert result.exit_code == 2 and "valid: 1 to 100000" in result.output
    assert len(result.output.strip().splitlines()) == 1

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fgvc_edge.bench.suite.run_bench", interrupted)
    result = CliRunner().invoke(app, ["bench", r18_copy, "--iters", "5"])
    assert result.exit_code == 130 and result.output.strip().splitlines()[-1] == "interrupted"
