"""Ours vs OpenVINO on CPU, side by side in one run: every registry model at its paper configuration, batch 1.

    python benchmarks/openvino_compare.py                       # all models, 2 threads (make bench-openvino)
    python benchmarks/openvino_compare.py --models resnet50,acanet_resnet18 --iters 50 --latency-aware
    python benchmarks/openvino_compare.py --before benchmarks/results/openvino_compare/rows-old.json

Per model: ONNX Runtime FP32 and INT8 (ours), OpenVINO FP32 and NNCF INT8 (the same FP32 ONNX, the same
calibration images, the same threads, OpenVINO's latency hint) — all from `fgvc-edge bench` rows — then the p50
table with ours/OpenVINO ratios, INT8-vs-FP32 top-1 agreement and relative L2 on real images (scikit-image's
photographs, or --data), ms per GMAC, and the targets of issue #16 checked one by one:

- our best p50 ≤ OpenVINO's best, FP32 vs FP32 and INT8 vs INT8, with top-1 agreement at least NNCF's;
- no INT8 slower than its FP32, INT8 ≥ 2× FP32;
- INT8 ms/GMAC within 2× of ResNet-50's.

Run it on an otherwise idle machine: every figure is a p50 over --iters runs, and 2 busy cores shared with other
jobs move them by far more than the differences measured. Rows are appended to rows.json model by model, so an
interrupted run continues with --resume. Results go to benchmarks/results/openvino_compare/ (git-ignored).
"""
import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

OUT_DIR = os.path.join("benchmarks", "results", "openvino_compare")
Row = Dict[str, Any]
Key = Tuple[Any, ...]
INT8_SPEEDUP_TARGET = 2.0
MS_PER_GMAC_TARGET = 2.0


def point_key(row: Row) -> Key:
    return row["model"], row.get("variant"), row["input_size"], row["num_classes"]


def label(key: Key) -> str:
    model, variant, size, classes = key
    return "{}{} @{}/{}".format(model, "[{}]".format(variant) if variant else "", size, classes)


def p50(rows: Sequence[Row], runtime: str, precision: str) -> Optional[float]:
    found = [r["latency_ms"]["p50"] for r in rows if r["runtime"] == runtime and r["precision"] == precision
             and r.get("latency_ms")]
    return min(found) if found else None


def accuracy(rows: Sequence[Row], runtime: str, key: str) -> Optional[float]:
    found = [r["int8_accuracy"][key] for r in rows if r["runtime"] == runtime and r.get("int8_accuracy")]
    return found[0] if found else None


def summarise(rows: Sequence[Row]) -> Dict[Key, Dict[str, Any]]:
    """One record per model point: the five p50s, ratios, accuracy and ms/GMAC."""
    points: Dict[Key, List[Row]] = {}
    for row in rows:
        points.setdefault(point_key(row), []).append(row)
    table = {}
    for key, group in points.items():
        cell = {name: p50(group, runtime, precision) for name, runtime, precision in (
            ("ort_fp32", "onnxruntime", "fp32"), ("ort_int8", "onnxruntime", "int8"),
            ("ov_fp32", "openvino", "fp32"), ("ov_int8", "openvino", "int8"))}
        ours = [v for v in (cell["ort_fp32"], cell["ort_int8"]) if v is not None]
        theirs = [v for v in (cell["ov_fp32"], cell["ov_int8"]) if v is not None]
        cell.update({
            "gmacs": (group[0].get("macs") or 0) / 1e9,
            "ours_best": min(ours) if ours else None,
            "ov_best": min(theirs) if theirs else None,
            "top1_ours": accuracy(group, "onnxruntime", "top1_agreement"),
            "top1_ov": accuracy(group, "openvino", "top1_agreement"),
            "rel_ours": accuracy(group, "onnxruntime", "rel_error"),
            "rel_ov": accuracy(group, "openvino", "rel_error"),
        })
        table[key] = cell
    return table


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def fmt(value: Optional[float], pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def reference_ms_per_gmac(table: Dict[Key, Dict[str, Any]]) -> Optional[float]:
    """ResNet-50's INT8 ms/GMAC (its 224 px configuration if measured, else any)."""
    candidates = sorted((key for key in table if key[0] == "resnet50"), key=lambda k: (k[2] != 224, k))
    for key in candidates:
        cell = table[key]
        if cell["ort_int8"] and cell["gmacs"]:
            return cell["ort_int8"] / cell["gmacs"]
    return None


def markdown(table: Dict[Key, Dict[str, Any]], before: Dict[Key, Dict[str, Any]], threads: int) -> str:
    reference = reference_ms_per_gmac(table)
    lines = [
        "| model | GMACs | ORT FP32 | ORT INT8 | OV FP32 | OV INT8 | ours best | FP32 ours/OV | INT8 ours/OV "
        "| INT8 ×FP32 (ours) | top-1 ours / OV | rel L2 ours / OV | INT8 ms/GMAC | ×ResNet-50 |",
        "|" + "---|" * 14,
    ]
    for key, c in sorted(table.items(), key=lambda kv: label(kv[0])):
        old = before.get(key, {})

        def cell(name: str) -> str:
            now = fmt(c[name])
            return now if old.get(name) is None else "{} → {}".format(fmt(old[name]), now)

        per_gmac = ratio(c["ort_int8"], c["gmacs"])
        lines.append("| " + " | ".join([
            label(key), fmt(c["gmacs"]), cell("ort_fp32"), cell("ort_int8"), fmt(c["ov_fp32"]), fmt(c["ov_int8"]),
            fmt(c["ours_best"]), fmt(ratio(c["ort_fp32"], c["ov_fp32"]), "{:.2f}×"),
            fmt(ratio(c["ort_int8"], c["ov_int8"]), "{:.2f}×"), fmt(ratio(c["ort_fp32"], c["ort_int8"]), "{:.2f}×"),
            "{} / {}".format(fmt(c["top1_ours"], "{:.3f}"), fmt(c["top1_ov"], "{:.3f}")),
            "{} / {}".format(fmt(c["rel_ours"], "{:.3f}"), fmt(c["rel_ov"], "{:.3f}")),
            fmt(per_gmac), fmt(ratio(per_gmac, reference), "{:.2f}×"),
        ]) + " |")
    lines += ["", "p50 ms per image, batch 1, {} threads, one run; ours = ONNX Runtime (CPU provider), OV = OpenVINO "
              "CPU plugin (PERFORMANCE_HINT LATENCY), INT8: ours = ORT static Q/DQ, OV = NNCF default recipe, same "
              "calibration images; top-1 / rel L2 = INT8 against FP32 logits of the same weights.".format(threads)]
    if before:
        lines.append("a → b: before (--before file) → this run.")
    lines += ["", "## Targets", ""] + ["- {} {}".format("✓" if ok else "✗", text) for ok, text in targets(table)]
    return "\n".join(lines) + "\n"


def targets(table: Dict[Key, Dict[str, Any]]) -> List[Tuple[bool, str]]:
    """Issue #16's targets, one line per model and target that could be checked."""
    reference = reference_ms_per_gmac(table)
    checks = []
    for key, c in sorted(table.items(), key=lambda kv: label(kv[0])):
        name = label(key)
        for precision in ("fp32", "int8"):
            ours, theirs = c["ort_" + precision], c["ov_" + precision]
            if ours and theirs:
                checks.append((ours <= theirs, "{} {}: ours {:.2f} ms vs OpenVINO {:.2f} ms".format(
                    name, precision.upper(), ours, theirs)))
        if c["top1_ours"] is not None and c["top1_ov"] is not None:
            checks.append((c["top1_ours"] >= c["top1_ov"], "{} INT8 top-1 agreement: ours {:.3f} vs NNCF {:.3f}".format(
                name, c["top1_ours"], c["top1_ov"])))
        speedup = ratio(c["ort_fp32"], c["ort_int8"])
        if speedup is not None:
            checks.append((speedup >= INT8_SPEEDUP_TARGET, "{} INT8 {:.2f}× FP32 (target ≥ {:.0f}×)".format(
                name, speedup, INT8_SPEEDUP_TARGET)))
        per_gmac = ratio(c["ort_int8"], c["gmacs"])
        if per_gmac is not None and reference:
            checks.append((per_gmac <= MS_PER_GMAC_TARGET * reference,
                           "{} INT8 {:.2f} ms/GMAC, {:.2f}× ResNet-50's".format(name, per_gmac, per_gmac / reference)))
    return checks


def measure(models: Sequence[str], args: argparse.Namespace, rows_path: str) -> List[Row]:
    from fgvc_edge.bench.suite import BenchProgress, BenchSettings, run_bench

    rows: List[Row] = []
    if args.resume and os.path.isfile(rows_path):
        with open(rows_path, encoding="utf-8") as fh:
            rows = json.load(fh)
    done = {row["model"] for row in rows}
    settings = BenchSettings(runtimes=("onnxruntime", "openvino"), precisions=("fp32", "int8"), batches=(1,),
                             iters=args.iters, warmup=args.warmup, threads=args.threads, data=args.data,
                             latency_aware=args.latency_aware)
    for model in models:
        if model in done:
            continue
        print("measuring", model, flush=True)
        rows.extend(run_bench([model], settings, progress=BenchProgress(step=lambda text: print("  " + text, flush=True))))
        _write(rows_path, json.dumps(rows, indent=1, default=str))
    return rows


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated registry names (default: every registry model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data", help="a data set (any layout `eval` reads): INT8 calibrated on its training images, "
                        "top-1 on its test split (default: calibration and agreement on scikit-image's photos)")
    parser.add_argument("--latency-aware", action="store_true", help="our INT8 with latency-aware mixed precision")
    parser.add_argument("--before", help="rows.json of an earlier run: show before → after")
    parser.add_argument("--resume", action="store_true", help="keep the models already in rows.json")
    parser.add_argument("--out", default=OUT_DIR)
    args = parser.parse_args(argv)

    from fgvc_edge.models import list_models

    models = args.models.split(",") if args.models else list_models()
    rows_path = os.path.join(args.out, "rows.json")
    rows = measure(models, args, rows_path)
    before: Dict[Key, Dict[str, Any]] = {}
    if args.before:
        with open(args.before, encoding="utf-8") as fh:
            before = summarise(json.load(fh))
    text = markdown(summarise(rows), before, args.threads)
    _write(os.path.join(args.out, "table.md"), text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
