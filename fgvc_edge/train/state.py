"""Training state for exact resume: RNG states as tensors/primitives.

Everything stored in ``training_state.pt`` loads with ``torch.load(weights_only=True)``: the optimizer and
scheduler state dicts (tensors, numbers, lists), the epoch, the history of metrics, and each process's RNG
state — torch CPU (a uint8 tensor), CUDA, numpy's MT19937 (keys as an int64 tensor) and Python's ``random``
(a list of ints).

A run folder's ``last`` checkpoint is written whole by :func:`fgvc_edge.checkpoint.save_checkpoint` (a
temporary folder swapped in), so the weights and the training state of one epoch always travel together and
a crash leaves the previous ``last``.
"""
import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch

from fgvc_edge._io import recover_dir
from fgvc_edge.checkpoint import RECORD_FILE


def capture_rng() -> Dict[str, Any]:
    version, keys, gauss = random.getstate()
    kind, np_keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "keys": [int(k) for k in keys], "gauss": gauss},
    }


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["keys"]), py_state["gauss"]))


def last_checkpoint(folder: str) -> Optional[str]:
    """``folder`` when it holds a checkpoint (restored first if a crash interrupted its swap), else None."""
    recover_dir(folder)
    return folder if os.path.exists(os.path.join(folder, RECORD_FILE)) else None
