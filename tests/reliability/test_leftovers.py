"""Class 8: what a killed run leaves (PID-named temporaries) is removed by the next run of the same write."""
import os
import signal
import time

from reliability_helpers import run_child


def age(path, seconds=3600):
    """Make a leftover older than this test process (a later run sees it so)."""
    past = time.time() - seconds
    os.utime(path, (past, past))


def hidden(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    from fgvc_edge._io import atomic_path

    target = tmp_path / "engines" / "out.onnx"
    script = """
    from fgvc_edge._io import atomic_path
    with atomic_path(TARGET) as tmp:
        open(tmp, "wb").write(b"x" * 1000)
    """.replace("TARGET", repr(str(target)))
    child = run_child(script, kill_at=target)
    assert child.returncode == -signal.SIGKILL
    (left,) = hidden(target.parent)
    assert left.startswith(".out.onnx.") and left.endswith(".tmp")
    # The next run of the same write (a fresh process in real life: older than it, its writer dead).
    age(target.parent / left)
    with atomic_path(str(target)) as tmp:
        open(tmp, "wb").write(b"y")
    assert hidden(target.parent) == [] and target.read_bytes() == b"y"


def test_leftovers_of_live_processes_and_of_other_targets_stay(tmp_path):
    from fgvc_edge._io import atomic_path

    live = tmp_path / ".out.onnx.{}.abc123.tmp".format(os.getppid())  # our parent: alive
    other = tmp_path / ".out.onnx.json.999999999.abc123.tmp"  # another target's
    unowned = tmp_path / ".out.onnx.abc.tmp"  # not our naming
    for path in (live, other, unowned):
        path.write_bytes(b"in progress")
        age(path)
    with atomic_path(str(tmp_path / "out.onnx")) as tmp:
        open(tmp, "wb").write(b"y")
    assert sorted(hidden(tmp_path)) == sorted(p.name for p in (live, other, unowned))


def test_a_killed_calibration_leaves_a_private_folder_that_the_next_one_removes(tmp_path, monkeypatch):
    from fgvc_edge._io import private_tempdir

    script = """
    import os, signal
    from fgvc_edge._io import private_tempdir
    with private_tempdir("fgvc-calib-") as tmp:
        open(os.path.join(tmp, "fp32.onnx"), "wb").write(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    child = run_child(script, env={"TMPDIR": str(tmp_path)})
    assert child.returncode == -signal.SIGKILL
    (left,) = os.listdir(tmp_path)
    assert left.startswith("fgvc-calib-")
    age(tmp_path / left)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with private_tempdir("fgvc-calib-") as mine:
        assert os.listdir(tmp_path) == [os.path.basename(mine)]
    assert os.listdir(tmp_path) == []


def test_a_killed_checkpoint_write_leaves_a_folder_that_the_next_one_removes(tmp_path):
    from fgvc_edge._io import atomic_dir

    out = tmp_path / "out"
    script = """
    import os, signal
    from fgvc_edge._io import atomic_dir
    with atomic_dir(OUT) as tmp:
        open(os.path.join(tmp, "model.safetensors"), "wb").write(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    """.replace("OUT", repr(str(out)))
    assert run_child(script).returncode == -signal.SIGKILL
    (left,) = hidden(tmp_path)
    assert left.startswith(".out.") and os.listdir(tmp_path / left) == ["model.safetensors"]
    age(tmp_path / left)
    with atomic_dir(str(out)) as tmp:
        open(os.path.join(tmp, "fgvc.json"), "w").write("{}")
    assert hidden(tmp_path) == [] and os.listdir(out) == ["fgvc.json"]
