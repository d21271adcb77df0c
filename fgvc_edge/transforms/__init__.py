"""Transforms on module trees after construction: reparameterization and structured pruning.

Each transform records itself in ``model.structure_transforms``; a checkpoint stores the record and
``create_model(checkpoint=...)`` replays it before loading the tensors (:mod:`fgvc_edge.structure`).
"""
from fgvc_edge.transforms.reparam import ReparamReport, reparameterize_model, reparameterize_with_report

__all__ = ["ReparamReport", "reparameterize_model", "reparameterize_with_report"]
