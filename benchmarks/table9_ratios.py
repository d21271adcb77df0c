"""Print CMAL-Net Table 9's latency ratios (RAW/R50, RAW+A_oval/R50) next to ours, from a bench JSON.

    python benchmarks/table9_ratios.py benchmarks/results/bench.json

One line per (runtime, precision, batch, device) measured; the paper's ratios come from its own rows
(RTX 3080 Ti: 6.527/4.174 = 1.56×, 12.680/4.174 = 3.04×).
"""
import json
import sys
from typing import Any, Dict, List

VARIANTS = (("raw", "RAW/R50"), ("raw+aoval", "RAW+A_oval/R50"))


def table9_lines(rows: List[Dict[str, Any]]) -> List[str]:
    lines = []
    groups = sorted({(r["runtime"], r["precision"], r["batch"], r["device"]) for r in rows if r.get("latency_ms")})
    for runtime, precision, batch, device in groups:
        same = [r for r in rows if (r["runtime"], r["precision"], r["batch"], r["device"]) == (runtime, precision, batch, device)]
        base = next((r for r in same if (r.get("paper") or {}).get("id") == "cmal_table9/resnet50"), None)
        parts = ["{} {} b{} on {}:".format(runtime, precision, batch, device)]
        if base is not None:
            parts.append("R50 {:.2f} ms".format(base["latency_ms"]["p50"]))
        for variant, label in VARIANTS:
            row = next((r for r in same if r["model"] == "cmal_resnet50" and r.get("variant") == variant
                        and r.get("relative")), None)
            if row is not None:
                rel = row["relative"]
                parts.append("{} {:.2f}× (Table 9: {:.2f}×)".format(label, rel["ours"], rel["paper"]))
        if len(parts) > 2:
            lines.append("  ".join(parts))
    return lines


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        found = table9_lines(json.load(fh))
    print("\n".join(found) if found else "no CMAL-Net Table 9 rows with a measured ResNet50 baseline")
