"""The papers' efficiency figures, shipped with the package as data (fgvc_edge/data/paper_figures.json)."""
import json
import os
from typing import Any, Dict, List, Optional

_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "paper_figures.json")
_ROWS: Optional[Dict[str, Dict[str, Any]]] = None


def paper_rows() -> Dict[str, Dict[str, Any]]:
    """Every paper row by id, e.g. ``cmal_table9/resnet50``."""
    global _ROWS
    if _ROWS is None:
        with open(_PATH, "r", encoding="utf-8") as fh:
            _ROWS = json.load(fh)["rows"]
    return _ROWS


def paper_row(row_id: str) -> Dict[str, Any]:
    return paper_rows()[row_id]


def rows_for_model(model: str) -> List[str]:
    return [rid for rid, row in paper_rows().items() if row["model"] == model]


def matching_row(model: str, variant: Optional[str], input_size: int, num_classes: int) -> Optional[str]:
    """The paper row measured at exactly this configuration, if any; ties prefer rows with latency."""
    hits = [
        rid
        for rid in rows_for_model(model)
        if paper_rows()[rid]["variant"] == variant
        and paper_rows()[rid]["input_size"] == input_size
        and paper_rows()[rid]["num_classes"] == num_classes
    ]
    hits.sort(key=lambda rid: paper_rows()[rid].get("latency_ms") is None)
    return hits[0] if hits else None


def paper_summary(row_id: str) -> Dict[str, Any]:
    """The ``paper`` field of a bench row."""
    row = paper_row(row_id)
    return {
        "id": row_id,
        "params": row["params"],
        "macs": row["macs"],
        "latency_ms": row["latency_ms"],
        "device": row["device"],
        "source": row["source"],
        "baseline": row.get("baseline"),
        "note": row.get("note"),
    }
