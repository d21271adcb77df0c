"""The sidecar: ``<artifact>.json`` beside every ONNX file or engine we write.

It is the contract between the toolkit that builds an artifact and the runner that deploys it:
input shape and batch, preprocessing, class names, precision, provenance and parity figures.
The same facts go into an ONNX file's ``metadata_props`` (key ``fgvc_edge``), so a lone ONNX file still runs.

An artifact and its sidecar are written together (:func:`write_artifact`): both to temporary files, then
renamed, sidecar first. The sidecar records the artifact's sha256, so between the two renames (a crash) the
new sidecar does not match the old file, and :func:`check_digest` — run by every runner at load — refuses
the pair instead of running a graph with another graph's classes and preprocessing.

Every sidecar read is validated (:func:`validate_sidecar`: types, ranges, lengths) before use.
Valid on Python 3.8.
"""
import hashlib
import json
import os
import re
from typing import Any, Callable, Dict, List, Optional

from fgvc_edge._io import atomic_paths, dump_json, read_json, sha256_file, write_json
from fgvc_edge.contract.fields import field
from fgvc_edge.contract.limits import MAX_BATCH, MAX_CLASSES, MAX_INPUT_SIZE
from fgvc_edge.contract.preprocess import Preprocess
from fgvc_edge.errors import UserInputError

SCHEMA_VERSION = 1
METADATA_KEY = "fgvc_edge"
# Bump when the way a cached artifact is produced changes, so old cache entries stop matching.
CACHE_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")
REBUILD_HINT = "; re-export it (`fgvc-edge export`) or rebuild it (`fgvc-edge build`)"


def sidecar_path(artifact: str) -> str:
    return str(artifact) + ".json"


def write_sidecar(artifact: str, data: Dict[str, Any]) -> str:
    """Rewrite the sidecar of an artifact that stays as it is (its sha256 still holds)."""
    record = {"schema_version": SCHEMA_VERSION}
    record.update(data)
    path = sidecar_path(artifact)
    write_json(path, record)
    return path


def write_artifact(artifact: str, write: Callable[[str], Optional[Dict[str, Any]]],
                   record: Dict[str, Any]) -> Dict[str, Any]:
    """Write an artifact and its sidecar so that they become visible together (see the module docstring).

    ``write(path)`` writes the artifact to the temporary ``path`` and may return facts to add to ``record``;
    the sidecar gets ``record`` with those facts and the sha256 of what was written. Returns the sidecar."""
    with atomic_paths([sidecar_path(artifact), artifact]) as (sidecar_tmp, artifact_tmp):
        full = full_record(record, write(artifact_tmp), sha256=sha256_file(artifact_tmp))
        dump_json(sidecar_tmp, full)
    return full


def full_record(record: Dict[str, Any], facts: Optional[Dict[str, Any]], **digests: str) -> Dict[str, Any]:
    """A sidecar's contents: the schema version, ``record``, the writer's ``facts``, then the digests of what
    was written (they win over any stale digest a copied record carries)."""
    full = {"schema_version": SCHEMA_VERSION}
    full.update(record)
    full.update(facts or {})
    full.update(digests)
    return full


def read_sidecar(artifact: str) -> Optional[Dict[str, Any]]:
    """The validated sidecar of ``artifact``, or None when there is none. A newer schema is refused."""
    path = sidecar_path(artifact)
    if not os.path.lexists(path):
        return None
    return validate_sidecar(read_json(path), path)


def check_schema(record: Any, where: str) -> Dict[str, Any]:
    if not isinstance(record, dict):
        raise UserInputError("{} is not an fgvc-edge sidecar (expected a JSON object)".format(where))
    version = record.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise UserInputError(
            "{} has sidecar schema {!r}; this fgvc-edge reads up to {}: upgrade fgvc-edge".format(
                where, version, SCHEMA_VERSION
            )
        )
    return record


def validate_sidecar(record: Any, where: str) -> Dict[str, Any]:
    """``record`` if every field a reader uses has its type, range and length; else one line naming it."""
    record = check_schema(record, where)
    hint = REBUILD_HINT
    digest = field(record, "sha256", "str", where, hint=hint)
    if digest is not None and not re.match(r"^[0-9a-f]{64}$", digest):
        raise UserInputError("{}: field 'sha256' is not a sha256 hex digest{}".format(where, hint))
    for key in ("model", "variant", "checkpoint", "input_name", "output_name", "target", "cache_key",
                "tensorrt_version", "fgvc_edge_version"):
        field(record, key, "str", where, hint=hint)
    for key in ("batch_dependent", "version_compatible", "simplified"):
        field(record, key, "bool", where, hint=hint)
    for key in ("params", "macs"):
        field(record, key, "int", where, low=0, hint=hint)
    field(record, "precision", "str", where, choices=PRECISIONS, hint=hint)
    field(record, "dla_core", "int", where, low=0, hint=hint)
    field(record, "int8_float_scopes", "str_list", where, hint=hint)
    field(record, "gpu", "dict", where, hint=hint)
    classes = field(record, "num_classes", "int", where, low=1, high=MAX_CLASSES, hint=hint)
    names = field(record, "class_names", "str_list", where, hint=hint)
    if names is not None and classes is not None and len(names) != classes:
        raise UserInputError("{}: {} class names for {} classes{}".format(where, len(names), classes, hint))
    size = field(record, "input_size", "int", where, low=1, high=MAX_INPUT_SIZE, hint=hint)
    if record.get("batch") != "dynamic":
        field(record, "batch", "int", where, low=1, high=MAX_BATCH, hint=hint)
    profile = field(record, "batch_profile", "dict", where, hint=hint)
    if profile is not None:
        for key in ("min", "opt", "max"):
            field(profile, key, "int", "{} batch_profile".format(where), required=True, low=1, high=MAX_BATCH,
                  hint=hint)
    preprocess = record.get("preprocess")
    if preprocess is not None:
        try:
            crop = Preprocess.from_dict(preprocess).crop_size
        except UserInputError as exc:
            raise UserInputError("{}: {}{}".format(where, exc, hint)) from None
        if size is not None and crop != size:
            raise UserInputError("{}: preprocessing crops {} px for a {} px input{}".format(where, crop, size, hint))
    return record


def check_digest(artifact: str, record: Dict[str, Any], actual: Optional[str] = None) -> None:
    """Refuse a sidecar whose sha256 is not that of ``artifact`` (``actual``: the digest, if already known)."""
    expected = record.get("sha256")
    if expected is None:
        return
    actual = actual or sha256_file(artifact)
    if actual != expected:
        raise UserInputError(
            "{} does not belong to {} (sha256 differs: the pair was not written together, e.g. an interrupted "
            "export, or one of them was replaced){}".format(sidecar_path(artifact), artifact, REBUILD_HINT)
        )


def check_graph(artifact: str, record: Dict[str, Any], *, image_size: Optional[int], outputs: Optional[int],
                batch: Optional[int]) -> None:
    """Refuse a record that contradicts the graph it describes: input size, number of outputs, fixed batch
    (each compared only where the graph states it)."""
    problems: List[str] = []
    said_size = record.get("input_size")
    crop = (record.get("preprocess") or {}).get("crop_size")
    if image_size is not None:
        for label, value in (("input size", said_size), ("preprocessing crop", crop)):
            if value is not None and value != image_size:
                problems.append("{} {} px, the graph takes {} px".format(label, value, image_size))
    if outputs is not None:
        names = record.get("class_names")
        if names and len(names) != outputs:
            problems.append("{} class names, the graph has {} outputs".format(len(names), outputs))
        classes = record.get("num_classes")
        if classes is not None and classes != outputs:
            problems.append("{} classes, the graph has {} outputs".format(classes, outputs))
    said_batch = record.get("batch")
    if batch is not None and isinstance(said_batch, int) and said_batch != batch:
        problems.append("batch {}, the graph's is {}".format(said_batch, batch))
    if problems:
        raise UserInputError("the record of {} contradicts its graph: {}{}".format(
            artifact, "; ".join(problems), REBUILD_HINT))


def onnx_metadata_record(metadata_props: List[Any]) -> Optional[Dict[str, Any]]:
    """The sidecar facts stored in an ONNX model's metadata_props, if any (onnxruntime's custom map)."""
    items = dict(metadata_props)
    raw = items.get(METADATA_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return validate_sidecar(record, "the ONNX metadata")


def digest(parts: Any) -> str:
    """sha256 of a JSON-serialisable description (keys sorted): the cache key of an intermediate."""
    payload = json.dumps({"cache_format": CACHE_FORMAT, "parts": parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cached_record(path: str, key: str) -> Optional[Dict[str, Any]]:
    """The record of a cached artifact if it exists, is intact and was made for ``key``."""
    if not os.path.isfile(path):
        return None
    try:
        record = read_sidecar(path)
    except UserInputError:  # a damaged cache entry is rebuilt, not an error
        return None
    if not record or record.get("cache_key") != key or record.get("sha256") != sha256_file(path):
        return None
    try:
        # A hit marks the entry as used: `fgvc-edge cache prune --older-than` removes what went unused.
        os.utime(sidecar_path(path))
    except OSError:
        pass
    return record
