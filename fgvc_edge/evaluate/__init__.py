"""Evaluation of checkpoints, ONNX files and engines on a data set: one metric code path for every runtime.

Torch is imported only to run a checkpoint; ONNX/engine artifacts are evaluated through the deployable
runners (:mod:`fgvc_edge.runtime`)::

    from fgvc_edge.evaluate import evaluate_artifacts

    report = evaluate_artifacts(["runs/cub/best", "engines/cub-int8.onnx"], "~/data/CUB_200_2011")
    report.rows[1]["top1_drop_pp"]
"""
from fgvc_edge.evaluate.backends import ModuleBackend, RunnerBackend
from fgvc_edge.evaluate.core import (
    ArtifactResult,
    EvaluationReport,
    artifact_label,
    evaluate_artifacts,
    score_backend,
    spread,
)
from fgvc_edge.evaluate.metrics import ClassificationMetrics, agreement, comparison_rows, top1_change

__all__ = ["ArtifactResult", "ClassificationMetrics", "EvaluationReport", "ModuleBackend", "RunnerBackend", "agreement",
           "artifact_label", "comparison_rows", "evaluate_artifacts", "score_backend", "spread", "top1_change"]
