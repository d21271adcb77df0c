"""OpenVINO IR (``.xml`` + ``.bin``) from an FP32 ONNX: as is (FP32), or INT8 by NNCF, cached by content.

``nncf.quantize`` with its default recipe (``preset`` and ``model_type`` left to NNCF, fast bias
correction on) over the same calibration images, preprocessing and count our ONNX Runtime INT8 uses, so the
two quantizers are compared on equal terms. The IR (``.xml`` + ``.bin``) carries a sidecar like every
artifact here, with the FP32-vs-INT8 check on the first calibration images.
"""
import contextlib
import io
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import numpy as np

from fgvc_edge._io import atomic_paths, check_output_file, dump_json, sha256_file
from fgvc_edge.contract.sidecar import cached_record, digest, full_record, sidecar_path
from fgvc_edge.errors import UserInputError, require
from fgvc_edge.precision._artifact import TypedOnnx, compare_outputs, graph_io, load_onnx, record_preprocess, source_record
from fgvc_edge.precision.data import ImageStream, select_images
from fgvc_edge.precision.int8 import CHECK_IMAGES, DEFAULT_CACHE_DIR, DEFAULT_NUM_IMAGES, ImageSource, describe_images


class _Batches:
    """A re-iterable of preprocessed input batches: NNCF walks its dataset more than once."""

    def __init__(self, stream: ImageStream) -> None:
        self.stream = stream

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.stream.set_range(0, len(self.stream))
        feed = self.stream.get_next()
        while feed is not None:
            yield feed[self.stream.input_name]
            feed = self.stream.get_next()


def versions() -> Dict[str, str]:
    ov = require("openvino", "openvino")
    nncf = require("nncf", "openvino")
    return {"openvino": ov.__version__, "nncf": nncf.__version__}


def quantize_openvino(
    onnx_path: str,
    data: ImageSource,
    output: Optional[str] = None,
    *,
    num_images: int = DEFAULT_NUM_IMAGES,
    force: bool = False,
    cache_dir: str = DEFAULT_CACHE_DIR,
) -> TypedOnnx:
    """OpenVINO INT8 IR of ``onnx_path`` calibrated by NNCF on ``data`` (a folder, or an image sequence).

    Cached in ``cache_dir`` under its content key (model, images, preprocessing, count, OpenVINO and NNCF
    versions); copied to ``output`` (an ``.xml`` path) when given.
    """
    proto = load_onnx(onnx_path)
    record = source_record(onnx_path, proto)
    if record.get("precision") not in (None, "fp32"):
        raise UserInputError("{} is already {}; quantize the FP32 ONNX".format(onnx_path, record.get("precision")))
    if output and not output.lower().endswith(".xml"):
        raise UserInputError("an OpenVINO IR is written as .xml (+ .bin), not {}".format(output))
    images = select_images(data, num_images) if isinstance(data, str) else data
    preprocess = record_preprocess(record)
    model_sha = sha256_file(onnx_path)
    key = digest({"model": model_sha, "images": describe_images(images), "preprocess": preprocess.to_dict(),
                  "count": len(images), "quantizer": versions()})
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    cache_path = os.path.join(cache_dir, "{}-int8-openvino-{}.xml".format(stem, key[:16]))
    cached = None if force else _cached(cache_path, key)
    hit = cached is not None
    if cached is None:
        stream = ImageStream(images, preprocess, graph_io(proto)[0], batch=graph_io(proto)[2] or 1)
        if not len(stream):
            raise UserInputError("{} needs at least {} calibration images".format(onnx_path, stream.batch))
        cached = dict(record)
        cached.pop("parity", None)
        cached.update({
            "precision": "int8",
            "format": "openvino-ir",
            "target": "openvino",
            "quantization": dict(versions(), quantizer="nncf.quantize (default recipe)", num_images=len(images),
                                 cache_key=key, images=describe_images(images) if hasattr(images, "describe")
                                 else "folder"),
            "cache_key": key,
            "source_onnx_sha256": model_sha,
        })
        cached["int8_check"] = _quantize(onnx_path, stream, cache_path, cached)
    path = cache_path
    if output and os.path.abspath(output) != os.path.abspath(cache_path):
        path, cached = output, _copy_ir(cache_path, output, cached)
    return TypedOnnx(path=path, record=cached, cache_hit=hit)


def write_fp32_ir(onnx_path: str, output: str) -> Dict[str, Any]:
    """``onnx_path`` as an FP32 OpenVINO IR at ``output`` (.xml) with its sidecar; returns the record."""
    ov = require("openvino", "openvino")
    if not output.lower().endswith(".xml"):
        raise UserInputError("an OpenVINO IR is written as .xml (+ .bin), not {}".format(output))
    record = dict(source_record(onnx_path))
    if record.get("precision") not in (None, "fp32"):
        raise UserInputError("{} is {}; the FP32 IR needs the FP32 ONNX".format(onnx_path, record.get("precision")))
    check_output_file(output, sidecar_path(output), _bin(output))
    record.update({"precision": "fp32", "format": "openvino-ir", "target": "openvino", "openvino": versions()["openvino"],
                   "source_onnx_sha256": sha256_file(onnx_path)})
    # compress_to_fp16=False: the CPU plugin computes in FP32 here, keep the weights exact.
    model = ov.Core().read_model(onnx_path)
    record = write_ir(output, lambda xml: ov.save_model(model, xml, compress_to_fp16=False), record)
    return record


def _quantize(onnx_path: str, stream: ImageStream, xml_path: str, record: Dict[str, Any]) -> Dict[str, float]:
    ov = require("openvino", "openvino")
    nncf = require("nncf", "openvino")
    nncf.set_log_level(logging.ERROR)
    batches = _Batches(stream)
    # NNCF draws rich progress bars on stdout; the CLI draws its own.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(ov.Core().read_model(onnx_path), nncf.Dataset(batches), subset_size=len(batches))

    def save(xml: str) -> Dict[str, Any]:
        ov.save_model(quantized, xml)
        return {"int8_check": check_ir_against_fp32(onnx_path, xml, batches, CHECK_IMAGES)}

    record.update(write_ir(xml_path, save, record))
    check = record["int8_check"]
    return check


def check_ir_against_fp32(fp32_path: str, ir_path: str, batches: Sequence[np.ndarray], count: int) -> Dict[str, float]:
    """FP32 (ONNX Runtime) vs the IR (OpenVINO) on the first ``count`` batches."""
    from fgvc_edge.runtime.onnx_runner import OnnxRunner
    from fgvc_edge.runtime.openvino_runner import OpenVinoRunner

    references, candidates = [], []
    with OnnxRunner(fp32_path, providers=["CPUExecutionProvider"]) as fp32, OpenVinoRunner(ir_path) as int8:
        for index, batch in enumerate(batches):
            if index == count:
                break
            references.append(fp32.infer(batch))
            candidates.append(int8.infer(batch))
    return compare_outputs(np.concatenate(references), np.concatenate(candidates))


def _bin(xml_path: str) -> str:
    return os.path.splitext(xml_path)[0] + ".bin"


def _cached(xml_path: str, key: str) -> Optional[Dict[str, Any]]:
    record = cached_record(xml_path, key)
    if record is None or not os.path.isfile(_bin(xml_path)) or record.get("bin_sha256") != sha256_file(_bin(xml_path)):
        return None
    return record


def write_ir(xml_path: str, save: Callable[[str], Optional[Dict[str, Any]]], record: Dict[str, Any]) -> Dict[str, Any]:
    """Write an IR and its sidecar so that they become visible together (as ``write_artifact`` does for one file).

    ``save(xml)`` writes ``xml`` and the ``.bin`` beside it in a private folder and may return facts for the
    record. The three files are renamed into place weights first, then the sidecar (it holds the sha256 of both),
    then the ``.xml`` that a reader opens: a crash between renames leaves a sidecar that refuses the old pair."""
    folder = os.path.dirname(os.path.abspath(xml_path))
    os.makedirs(folder, exist_ok=True)
    with atomic_paths([_bin(xml_path), sidecar_path(xml_path), xml_path]) as (bin_tmp, sidecar_tmp, xml_tmp):
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fgvc-ov-") as tmp:
            staged = os.path.join(tmp, "model.xml")
            facts = save(staged)
            os.replace(_bin(staged), bin_tmp)
            os.replace(staged, xml_tmp)
        full = full_record(record, facts, sha256=sha256_file(xml_tmp), bin_sha256=sha256_file(bin_tmp))
        dump_json(sidecar_tmp, full)
    return full


def _copy_ir(source_xml: str, target_xml: str, record: Dict[str, Any]) -> Dict[str, Any]:
    check_output_file(target_xml, sidecar_path(target_xml), _bin(target_xml))

    def copy(xml: str) -> None:
        shutil.copyfile(_bin(source_xml), _bin(xml))
        shutil.copyfile(source_xml, xml)

    return write_ir(target_xml, copy, {k: v for k, v in record.items() if k not in ("sha256", "bin_sha256")})
