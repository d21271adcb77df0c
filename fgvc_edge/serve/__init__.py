"""Serving stage: deployed artifacts behind NVIDIA Triton Inference Server.

* :func:`serve` starts a real Triton (through PyTriton, extra ``serve``) in front of the artifacts' own
  runners — encoded images or preprocessed tensors in, logits and top-k out;
* :func:`write_triton_repository` writes a model repository for the official Triton container
  (``onnxruntime`` / ``tensorrt`` backends, a Python-backend preprocessing model and an ensemble).

Imports only the runtime and the contract (and PyTriton lazily) — never torch.
"""
from fgvc_edge.serve.models import ServedModel, model_name
from fgvc_edge.serve.repository import RepositorySettings, write_triton_repository
from fgvc_edge.serve.server import Endpoints, ServeError, ServeSettings, serve

__all__ = [
    "Endpoints", "RepositorySettings", "ServeError", "ServeSettings", "ServedModel", "model_name", "serve",
    "write_triton_repository",
]
