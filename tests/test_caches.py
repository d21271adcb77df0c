"""`fgvc-edge cache`: the export and calibration caches listed and pruned, on a tmp working directory."""
import json
import os
import time

import pytest
from typer.testing import CliRunner

from fgvc_edge.caches import CALIBRATION_CACHE_DIR, DAY, EXPORT_CACHE_DIR, list_caches, prune_caches
from fgvc_edge.cli import app

runner = CliRunner()
NOW = time.time()


def _file(path, size, age_days):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"x" * size)
    stamp = NOW - age_days * DAY
    os.utime(path, (stamp, stamp))


@pytest.fixture
def caches(tmp_path):
    """Two export entries (new, 40 days old), two calibration entries (10 days, 2 days), a README and a
    leftover temporary file of an interrupted write."""
    export = tmp_path / EXPORT_CACHE_DIR
    calib = tmp_path / CALIBRATION_CACHE_DIR
    _file(export / "resnet18-fp32-b1-aaaa.onnx", 1000, 0.1)
    _file(export / "resnet18-fp32-b1-aaaa.onnx.json", 100, 0.1)
    _file(export / "resnet50-fp32-b1-bbbb.onnx", 5000, 40)
    _file(export / "resnet50-fp32-b1-bbbb.onnx.json", 200, 40)
    _file(export / "resnet50-fp32-b1-bbbb.onnx.data", 3000, 40)
    _file(calib / "r18-int8-onnxruntime-cccc.onnx", 300, 10)
    _file(calib / "r18-int8-onnxruntime-cccc.onnx.json", 30, 10)
    _file(calib / "r50-int8-tensorrt-dddd.onnx", 400, 2)
    _file(calib / "r50-int8-tensorrt-dddd.onnx.json", 40, 2)
    _file(calib / ".r50.onnx.k2j3.tmp", 50, 20)
    _file(calib / "README.md", 10, 400)
    return tmp_path


def test_list_groups_artifacts_with_their_companions(caches):
    export, calib = list_caches(str(caches))
    assert export.name == "export" and len(export.entries) == 2 and export.size == 9300
    big = next(e for e in export.entries if e.name.startswith("resnet50"))
    assert sorted(os.path.basename(f) for f in big.files) == ["resnet50-fp32-b1-bbbb.onnx",
                                                              "resnet50-fp32-b1-bbbb.onnx.data",
                                                              "resnet50-fp32-b1-bbbb.onnx.json"]
    assert len(calib.entries) == 3 and calib.size == 820  # README.md is the checkout's, not the cache's
    assert (NOW - export.oldest) / DAY == pytest.approx(40, abs=0.01)
    assert (NOW - calib.newest) / DAY == pytest.approx(2, abs=0.01)


def test_list_of_missing_caches_is_empty(tmp_path):
    assert [len(c.entries) for c in list_caches(str(tmp_path))] == [0, 0]


def test_prune_older_than_removes_whole_entries_and_keeps_the_rest(caches):
    removed = prune_caches(str(caches), older_than_days=7, now=NOW)
    assert sorted(e.name for e in removed) == [".r50.onnx.k2j3.tmp", "r18-int8-onnxruntime-cccc.onnx",
                                               "resnet50-fp32-b1-bbbb.onnx"]
    left = sorted(p.name for p in (caches / EXPORT_CACHE_DIR).iterdir())
    assert left == ["resnet18-fp32-b1-aaaa.onnx", "resnet18-fp32-b1-aaaa.onnx.json"]
    left = sorted(p.name for p in (caches / CALIBRATION_CACHE_DIR).iterdir())
    assert left == ["README.md", "r50-int8-tensorrt-dddd.onnx", "r50-int8-tensorrt-dddd.onnx.json"]


def test_prune_all_keeps_only_the_checkout_files(caches):
    assert len(prune_caches(str(caches), everything=True)) == 5
    assert list((caches / EXPORT_CACHE_DIR).iterdir()) == []
    assert [p.name for p in (caches / CALIBRATION_CACHE_DIR).iterdir()] == ["README.md"]


def test_dry_run_removes_nothing(caches):
    before = sorted(str(p) for p in caches.rglob("*"))
    assert len(prune_caches(str(caches), everything=True, dry_run=True)) == 5
    assert sorted(str(p) for p in caches.rglob("*")) == before


def test_a_cache_hit_counts_as_use(tmp_path):
    """The export/calibration lookup touches the sidecar on a hit: pruning by age spares what is used."""
    from fgvc_edge._io import sha256_file
    from fgvc_edge.contract.sidecar import cached_record, write_sidecar

    artifact = tmp_path / EXPORT_CACHE_DIR / "m-fp32-b1-eeee.onnx"
    _file(artifact, 64, 30)
    write_sidecar(str(artifact), {"schema_version": 1, "cache_key": "k", "sha256": sha256_file(str(artifact))})
    os.utime(str(artifact) + ".json", (NOW - 30 * DAY, NOW - 30 * DAY))
    assert prune_caches(str(tmp_path), older_than_days=7, dry_run=True, now=NOW)
    assert cached_record(str(artifact), "k") is not None
    assert prune_caches(str(tmp_path), older_than_days=7, dry_run=True) == []


@pytest.mark.parametrize("args,needle", [
    ([], "say what to prune: --older-than DAYS or --all"),
    (["--older-than", 3, "--all"], "say what to prune"),
    (["--older-than", -1], "--older-than takes days >= 0"),
])
def test_prune_refusals_are_one_line(caches, monkeypatch, args, needle):
    monkeypatch.chdir(caches)
    result = runner.invoke(app, ["cache", "prune"] + [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and needle in result.output
    assert len(list((caches / EXPORT_CACHE_DIR).iterdir())) == 5  # nothing removed


def test_cache_command_lists_and_prunes(caches, monkeypatch):
    monkeypatch.chdir(caches)
    result = runner.invoke(app, ["cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "engines/.cache" in result.output and "9.1 KB" in result.output and "40.0 d" in result.output
    listed = json.loads(runner.invoke(app, ["cache", "--json"], catch_exceptions=False).output)
    assert [(c["cache"], c["entries"], c["bytes"]) for c in listed] == [("export", 2, 9300), ("calibration", 3, 820)]
    result = runner.invoke(app, ["cache", "prune", "--older-than", 30], catch_exceptions=False)
    assert result.exit_code == 0 and "removed 1 entries (8.0 KB)" in result.output
    pruned = json.loads(runner.invoke(app, ["cache", "prune", "--all", "--json"], catch_exceptions=False).output)
    assert pruned["entries"] == 4 and pruned["bytes"] == 1000 + 100 + 820
