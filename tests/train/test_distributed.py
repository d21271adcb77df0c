"""DistributedDataParallel through torchrun: 2 CPU processes, gloo backend, one short epoch."""
import json
import os
import subprocess
import sys

import torch

from fgvc_edge.checkpoint import TRAINING_STATE_FILE, read_checkpoint


def test_torchrun_two_processes_gloo(tiny_cub, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "fgvc_edge.cli", "train", "resnet18", "--data", str(tiny_cub), "--epochs", "1", "--batch-size", "4",
        "--input-size", "32", "--lr", "0.05", "--device", "cpu", "--out", str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["status"] == "finished"
    state = torch.load(out / "last" / TRAINING_STATE_FILE, weights_only=True)
    row = state["history"][0]
    # 24 images sharded over 2 processes, 3 batches of 4 each: every image seen once, counts summed over ranks.
    assert row["train_images"] == 24 and row["steps"] == 3
    assert 0.0 <= row["val_top1"] <= 1.0
    # Each process's RNG state is saved (for an exact resume on 2 processes), and they differ.
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    record, weights = read_checkpoint(str(out / "best"))
    assert record["class_names"] == ["Bird_0", "Bird_1", "Bird_2"] and "fc.weight" in weights
    assert done.stdout.count("done: 1 epochs") == 1  # only rank 0 reports
