"""Export a registered model to ONNX with the facts a deployment needs.

We use torch's TorchScript-based exporter (``dynamo=False``): TensorRT 8.5/8.6 (JetPack 5/6.0) parse
opset ≤ 17, and torch 2.14's dynamo exporter starts at opset 18 and fails to convert ResNets down to 17.
The graph is simplified with onnxsim, validated with ``onnx.checker``, and accepted only when ONNX Runtime
reproduces PyTorch: relative L2 error of the logits ≤ 1e-4 and the same top-1 on every sample.
"""
import io
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from torch import nn

from fgvc_edge._io import check_output_file
from fgvc_edge._version import __version__
from fgvc_edge.contract.limits import MAX_BATCH
from fgvc_edge.contract.sidecar import METADATA_KEY, SCHEMA_VERSION, sidecar_path, write_artifact
from fgvc_edge.errors import FgvcError, UserInputError, library_stage, require
from fgvc_edge.export.naming import artifact_path, batch_label, checkpoint_sha256, refuse_other_source

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
PARITY_RTOL = 1e-4
Batch = Union[int, str]


class ParityError(FgvcError):
    """ONNX Runtime does not reproduce PyTorch; nothing is written."""

    exit_code = 1


@dataclass
class ParityReport:
    rel_error: float
    max_abs_error: float
    top1_agreement: float
    samples: int
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.rel_error <= self.tolerance and self.top1_agreement == 1.0


@dataclass
class ExportResult:
    path: str
    sidecar: str
    sha256: str
    parity: ParityReport
    record: Dict[str, Any]


def default_onnx_path(name: str, variant: Optional[str] = None, *, checkpoint: Optional[str] = None,
                      batch: Batch = 1, precision: str = "fp32") -> str:
    """``engines/<model>[-<variant>]-<checkpoint or random>-<precision>-<b1|bdyn>.onnx`` (see export.naming)."""
    return artifact_path(name, variant, checkpoint, precision, batch_label(batch))


def parse_batch(batch: Batch) -> Batch:
    if isinstance(batch, str):
        if batch == "dynamic":
            return batch
        if not batch.isdigit():
            raise UserInputError("--batch takes a positive number or 'dynamic', not {!r}".format(batch))
        batch = int(batch)
    if not 1 <= batch <= MAX_BATCH:
        raise UserInputError("--batch must be in 1..{} or 'dynamic', got {}".format(MAX_BATCH, batch))
    return batch


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """‖candidate − reference‖₂ / ‖reference‖₂ over all logits (the project's one parity definition)."""
    reference = reference.astype(np.float64)
    diff = np.linalg.norm(candidate.astype(np.float64) - reference)
    return float(diff / max(np.linalg.norm(reference), 1e-12))


def compare_logits(reference: np.ndarray, candidate: np.ndarray, tolerance: float = PARITY_RTOL) -> ParityReport:
    return ParityReport(
        rel_error=relative_error(reference, candidate),
        max_abs_error=float(np.abs(candidate.astype(np.float64) - reference).max()),
        top1_agreement=float(np.mean(reference.argmax(-1) == candidate.argmax(-1))),
        samples=int(reference.shape[0]),
        tolerance=tolerance,
    )


def provenance(model: nn.Module, checkpoint: Optional[str]) -> Dict[str, Any]:
    """Where an artifact's weights come from: model, variant, checkpoint (path and weights' sha256)."""
    return {
        "model": model.config.name,
        "variant": getattr(model, "variant", None),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
    }


def model_record(model: nn.Module, *, checkpoint: Optional[str] = None,
                 source: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The facts about a model that every artifact built from it carries (params/MACs at batch 1 included,
    so a runtime-only bench can report them); ``source`` is :func:`provenance`, when already made."""
    from fgvc_edge.models.complexity import count_deploy_params, count_macs, count_params

    config = model.config
    macs, _ = count_macs(model, config.input_size)
    return {
        "fgvc_edge_version": __version__,
        **(source or provenance(model, checkpoint)),
        "num_classes": config.num_classes,
        "class_names": getattr(model, "class_names", None),
        "input_size": config.input_size,
        "preprocess": config.preprocess.to_dict(),
        "batch_dependent": config.batch_dependent,
        "paper_rows": list(config.paper_rows),
        "params": count_params(model),
        "params_deploy": count_deploy_params(model),
        "macs": macs,
    }


# Bumped whenever an export's graph or record changes for the same model (build caches key on it):
# 2 = the record carries ``int8_float_scopes``; 3 = and ``checkpoint_sha256``; 4 = CMAL-Net crops with two MatMuls
# (was GridSample) in a scope the record names in ``fp32_scopes``, and the record carries ``params_deploy``;
# 5 = ACANet's FCSA window attention as tiled GEMMs.
EXPORT_REVISION = 5


def onnx_scope(module_name: str) -> str:
    """The node-name prefix the TorchScript exporter gives a submodule's ops: ``layer1.0.conv2.0`` →
    ``/layer1/layer1.0/conv2/conv2.0/`` (a container's child index is named with its parent's name)."""
    parts = module_name.split(".")
    return "/" + "".join(
        "{}/".format(parts[i - 1] + "." + part if part.isdigit() and i else part) for i, part in enumerate(parts)
    )


def int8_float_scopes(model: nn.Module) -> List[str]:
    """ONNX scopes whose arithmetic stays float in INT8: modules of a class with ``INT8_FLOAT_ARITHMETIC``
    (window attention computed as hundreds of elementwise ops; only its convolutions are quantized) or with
    ``FP32_ARITHMETIC``."""
    return _scopes(model, "INT8_FLOAT_ARITHMETIC") + _scopes(model, "FP32_ARITHMETIC")


def fp32_scopes(model: nn.Module) -> List[str]:
    """ONNX scopes whose arithmetic stays FP32 in FP16 (and float in INT8): modules of a class with
    ``FP32_ARITHMETIC`` (CMAL-Net's crop: pixel coordinates, interpolation weights, thresholds)."""
    return _scopes(model, "FP32_ARITHMETIC")


def _scopes(model: nn.Module, flag: str) -> List[str]:
    return [onnx_scope(name) for name, module in model.named_modules() if name and getattr(type(module), flag, False)]


def _present_scopes(proto: Any, scopes: List[str]) -> List[str]:
    names = [node.name for node in proto.graph.node]
    missing = [scope for scope in scopes if not any(name.startswith(scope) for name in names)]
    if missing:  # the exporter changed its naming: the INT8 rule would silently not apply
        raise RuntimeError("no ONNX node under scope(s) {} of the model's float-arithmetic modules".format(missing))
    return scopes


def export_onnx(
    model: nn.Module,
    output: Optional[str] = None,
    *,
    batch: Batch = 1,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    checkpoint: Optional[str] = None,
    parity_samples: int = 2,
    seed: int = 0,
    force: bool = False,
) -> ExportResult:
    """Export ``model`` (from ``create_model``) to ``output``; write it and its sidecar only if parity holds.

    ``output`` defaults to a name that carries the source (see :mod:`fgvc_edge.export.naming`); an artifact of
    another source already there is replaced only with ``force``."""
    onnx = require("onnx", "toolkit")
    batch = parse_batch(batch)
    if not 13 <= opset <= 21:
        raise UserInputError("--opset must be between 13 and 21 (TensorRT 8.5 parses up to 17), got {}".format(opset))
    config = model.config
    source = provenance(model, checkpoint)
    output = output or default_onnx_path(config.name, source["variant"], checkpoint=checkpoint, batch=batch)
    check_output_file(output, sidecar_path(output))
    refuse_other_source(output, source, force)
    if config.batch_dependent and batch == "dynamic":
        raise UserInputError("{}'s output depends on the batch: export it with a fixed --batch".format(config.name))
    model = model.eval()
    size = config.input_size
    trace_batch = 2 if batch == "dynamic" else batch
    generator = torch.Generator().manual_seed(seed)
    dummy = torch.randn(trace_batch, 3, size, size, generator=generator)

    proto = onnx.load_model_from_string(_torch_export(model, dummy, batch=batch, opset=opset))
    if simplify:
        proto = _simplify(proto)
    with library_stage("onnx.checker"):
        onnx.checker.check_model(proto, full_check=True)
    record = model_record(model, source=source)
    record.update(
        {
            "format": "onnx",
            "precision": "fp32",
            "input_name": "input",
            "output_name": "logits",
            "batch": batch,
            "input_shape": ["batch" if batch == "dynamic" else batch, 3, size, size],
            "opset": opset,
            "simplified": bool(simplify),
            "exporter": "torch.onnx (TorchScript) {}".format(torch.__version__),
            "int8_float_scopes": _present_scopes(proto, int8_float_scopes(model)),
            "fp32_scopes": _present_scopes(proto, fp32_scopes(model)),
        }
    )
    parity = _check_parity(model, proto, batch=batch, size=size, samples=parity_samples, seed=seed + 1)
    record["parity"] = asdict(parity)
    if not parity.passed:
        raise ParityError(
            "ONNX Runtime disagrees with PyTorch for {}: relative error {:.2e} (limit {:.0e}), "
            "top-1 agreement {:.0%}; nothing written".format(
                config.name, parity.rel_error, parity.tolerance, parity.top1_agreement
            )
        )
    _set_metadata(proto, record)
    record = write_artifact(output, lambda tmp: onnx.save(proto, tmp), record)
    sidecar, digest = sidecar_path(output), record["sha256"]
    return ExportResult(path=output, sidecar=sidecar, sha256=digest, parity=parity, record=record)


def _torch_export(model: nn.Module, dummy: torch.Tensor, *, batch: Batch, opset: int) -> bytes:
    """The serialized graph, exported in memory (nothing is on disk before parity holds)."""
    dynamic_axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if batch == "dynamic" else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        with library_stage("ONNX export of {} (torch.onnx)".format(model.config.name)):
            torch.onnx.export(
                model,
                (dummy,),
                buffer,
                input_names=["input"],
                output_names=["logits"],
                opset_version=opset,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                dynamo=False,
            )
    return buffer.getvalue()


def _simplify(proto: Any) -> Any:
    onnxsim = require("onnxsim", "toolkit")
    with library_stage("onnxsim"):
        simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise FgvcError("onnxsim could not validate the simplified graph; retry with --no-simplify")
    return simplified


def _set_metadata(proto: Any, record: Dict[str, Any]) -> None:
    facts = {"schema_version": SCHEMA_VERSION}
    facts.update(record)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(facts, sort_keys=True)


def _check_parity(model: nn.Module, proto: Any, *, batch: Batch, size: int, samples: int, seed: int) -> ParityReport:
    ort = require("onnxruntime", "onnxruntime")
    from fgvc_edge.runtime.onnx_runner import session_options

    # A graph with a discrete decision (CMAL-Net's thresholded attention box) brings a probe: the graph
    # serialised with extra outputs, and compare(session, x) -> (PyTorch logits given the graph's own
    # decision, graph logits), which judges the decision itself (see fgvc_edge.models.cmal).
    hook = getattr(model, "onnx_parity_probe", None)
    probe = hook(proto) if hook is not None else None
    with library_stage("ONNX Runtime session for the parity check"):
        session = ort.InferenceSession(
            probe.model_bytes if probe is not None else proto.SerializeToString(),
            sess_options=session_options(),
            providers=["CPUExecutionProvider"],
        )
    generator = torch.Generator().manual_seed(seed)
    # A dynamic graph is checked at two batch sizes, so the batch axis really is free.
    batches: List[int] = [1, 3] if batch == "dynamic" else [int(batch)] * samples
    references, candidates = [], []
    for n in batches:
        x = torch.randn(n, 3, size, size, generator=generator)
        if probe is not None:
            reference, candidate = probe.compare(session, x)
            references.append(reference)
            candidates.append(candidate)
            continue
        with torch.inference_mode():
            references.append(model(x).float().numpy())
        with library_stage("ONNX Runtime parity check"):
            candidates.append(session.run(["logits"], {"input": x.numpy()})[0])
    return compare_logits(np.concatenate(references), np.concatenate(candidates))
