"""Render the before/after pruning table from `benchmarks/prune_sweep.sh` output.

    python benchmarks/prune_table.py [benchmarks/results/prune]  →  Markdown on stdout

One line per model (and variant): params, GMACs and p50 ms per image of eager PyTorch, ONNX Runtime FP32 and
ONNX Runtime INT8, before → after pruning, all from the same `fgvc-edge bench --checkpoint` run.
"""
import glob
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

CELLS = (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))


def _p50(rows: List[Dict[str, Any]], runtime: str, precision: str) -> Optional[float]:
    for row in rows:
        if row["runtime"] == runtime and row["precision"] == precision and row.get("latency_ms"):
            return row["latency_ms"]["p50"]
    return None


def _pair(before: Optional[float], after: Optional[float], fmt: str) -> str:
    if before is None or after is None:
        return "-"
    return "{} → {} ({:+.0f}%)".format(fmt.format(before), fmt.format(after), 100.0 * (after / before - 1.0))


def table(folder: str) -> str:
    lines = [
        "| model | input | params M | GMACs | eager p50 ms | ORT FP32 p50 ms | ORT INT8 p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    threads = set()
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as fh:
            rows = json.load(fh)
        groups: Dict[Tuple[str, Any], Dict[str, List[Dict[str, Any]]]] = {}
        for row in rows:
            side = "before" if row.get("before_of") else "after" if row.get("transforms") else None
            if side is None:
                continue
            threads.add(row.get("threads"))
            groups.setdefault((row["model"], row.get("variant")), {"before": [], "after": []})[side].append(row)
        for (model, variant), sides in groups.items():
            before, after = sides["before"], sides["after"]
            if not before or not after:
                continue
            name = model + ("[{}]".format(variant) if variant else "")
            cells = [_pair(before[0]["params"] / 1e6, after[0]["params"] / 1e6, "{:.2f}"),
                     _pair(before[0]["macs"] / 1e9, after[0]["macs"] / 1e9, "{:.2f}")]
            cells += [_pair(_p50(before, rt, p), _p50(after, rt, p), "{:.1f}") for rt, p in CELLS]
            lines.append("| {} | {} | {} |".format(name, before[0]["input_size"], " | ".join(cells)))
    lines.append("")
    lines.append("p50 per image at batch 1, threads: {}; INT8 calibrated on synthetic images (speed only)."
                 .format(", ".join(str(t) for t in sorted(t for t in threads if t)) or "?"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1] if len(sys.argv) > 1 else os.path.join("benchmarks", "results", "prune")))
