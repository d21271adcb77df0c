"""Class 2: a checkpoint folder is written whole (temporary folder, swapped in); the previous one survives.

Every writer of a checkpoint — train, prune, reparam, import — goes through save_checkpoint, so these
kill it at chosen points and check that the folder a user had is exactly as it was, and loads.
"""
import os
import signal
import time

import pytest

from fgvc_edge.errors import UserInputError

from reliability_helpers import run_child


def folder_bytes(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def leftovers(parent, name):
    return sorted(n for n in os.listdir(parent) if n.startswith("." + name + "."))


def test_kill_9_while_prune_writes_over_a_checkpoint_keeps_the_old_one(exported_r18, tmp_path):
    import shutil

    _, checkpoint = exported_r18
    out = tmp_path / "out"
    shutil.copytree(checkpoint, out)
    before = folder_bytes(out)
    # Killed after the new weights are written, before the new record: the point where the old writer
    # left new weights with the old record.
    script = """
    import os, signal, sys
    import fgvc_edge.checkpoint as ck
    _dump = ck.dump_json
    def dump_or_die(path, data):
        if path.endswith("fgvc.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        _dump(path, data)
    ck.dump_json = dump_or_die
    from fgvc_edge.cli import main
    sys.argv = ["fgvc-edge", "prune", "resnet18", "-c", OUT, "--ratio", "0.5", "-o", OUT]
    main()
    """.replace("OUT", repr(str(out)))
    child = run_child(script)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert folder_bytes(out) == before  # untouched, byte for byte
    (left,) = leftovers(tmp_path, "out")  # the unfinished new folder, hidden beside it
    past = time.time() - 3600  # as a later run sees it: older than itself, its writer dead
    os.utime(tmp_path / left, (past, past))
    from fgvc_edge.checkpoint import read_checkpoint_record
    from fgvc_edge.transforms.prune import prune_checkpoint

    prune_checkpoint("resnet18", str(out), checkpoint=str(out), ratio=0.5)
    assert leftovers(tmp_path, "out") == []  # the later run removed what the killed one left

    assert [s["name"] for s in read_checkpoint_record(str(out))["structure"]["transforms"]] == ["prune"]


def test_kill_9_between_the_renames_of_the_fallback_swap_loses_nothing(exported_r18, tmp_path):
    import shutil

    _, checkpoint = exported_r18
    out = tmp_path / "ck"
    shutil.copytree(checkpoint, out)
    before = folder_bytes(out)
    # Where renameat2(RENAME_EXCHANGE) is missing, the swap is two renames: die between them.
    script = """
    import os, signal
    import fgvc_edge._io as io_
    io_._exchange = lambda a, b: False
    _rename = os.rename
    def rename_or_die(src, dst):
        if os.path.abspath(dst) == OUT:
            os.kill(os.getpid(), signal.SIGKILL)
        _rename(src, dst)
    os.rename = rename_or_die
    from fgvc_edge.checkpoint import save_checkpoint
    from fgvc_edge.models import create_model
    save_checkpoint(create_model("resnet18", num_classes=3, input_size=32), OUT, class_names=["x", "y", "z"])
    """.replace("OUT", repr(str(out)))
    child = run_child(script)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert not out.exists()  # between the renames the old folder is aside ...
    from fgvc_edge.models import create_model

    model = create_model("resnet18", checkpoint=str(out))  # ... and reading it puts it back
    assert model.class_names == ["a", "b", "c"] and folder_bytes(out) == before


def test_a_failed_write_keeps_the_old_folder_and_leaves_no_temporary(exported_r18, tmp_path, monkeypatch):
    import errno
    import shutil

    import fgvc_edge.checkpoint as ck
    from fgvc_edge.models import create_model

    _, checkpoint = exported_r18
    out = tmp_path / "ck"
    shutil.copytree(checkpoint, out)
    before = folder_bytes(out)

    def full_disk(path, data):
        with open(path, "wb") as fh:
            fh.write(data[:100])
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(ck, "write_bytes", full_disk)
    with pytest.raises(OSError):
        ck.save_checkpoint(create_model("resnet18", num_classes=3, input_size=32), str(out))
    assert folder_bytes(out) == before and os.listdir(tmp_path) == ["ck"]


def test_a_folder_with_the_users_own_files_is_never_replaced(tmp_path):
    from fgvc_edge.checkpoint import save_checkpoint
    from fgvc_edge.models import create_model

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("months of work")
    with pytest.raises(UserInputError, match="not part of a checkpoint"):
        save_checkpoint(create_model("resnet18", num_classes=3, input_size=32), str(folder))
    assert (folder / "thesis.tex").read_text() == "months of work"

