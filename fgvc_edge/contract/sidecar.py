"""The sidecar: ``<artifact>.json`` beside every ONNX file or engine we write.

It is the contract between the toolkit that builds an artifact and the runner that deploys it:
input shape and batch, preprocessing, class names, precision, provenance and parity figures.
The same facts go into an ONNX file's ``metadata_props`` (key ``fgvc_edge``), so a lone ONNX file still runs.
Valid on Python 3.8.
"""
import hashlib
import json
import os
from typing import Any, Dict, List, Optional

from fgvc_edge._io import read_json, sha256_file, write_json
from fgvc_edge.errors import UserInputError

SCHEMA_VERSION = 1
METADATA_KEY = "fgvc_edge"
# Bump when the way a cached artifact is produced changes, so old cache entries stop matching.
CACHE_FORMAT = 1


def sidecar_path(artifact: str) -> str:
    return str(artifact) + ".json"


def write_sidecar(artifact: str, data: Dict[str, Any]) -> str:
    record = {"schema_version": SCHEMA_VERSION}
    record.update(data)
    path = sidecar_path(artifact)
    write_json(path, record)
    return path


def read_sidecar(artifact: str) -> Optional[Dict[str, Any]]:
    """The sidecar of ``artifact``, or None when there is none. A newer schema is refused."""
    path = sidecar_path(artifact)
    if not os.path.exists(path):
        return None
    return check_schema(read_json(path), path)


def check_schema(record: Any, where: str) -> Dict[str, Any]:
    if not isinstance(record, dict):
        raise UserInputError("{} is not an fgvc-edge sidecar (expected a JSON object)".format(where))
    version = record.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UserInputError(
            "{} has sidecar schema {!r}; this fgvc-edge reads up to {}: upgrade fgvc-edge".format(
                where, version, SCHEMA_VERSION
            )
        )
    return record


def onnx_metadata_record(metadata_props: List[Any]) -> Optional[Dict[str, Any]]:
    """The sidecar facts stored in an ONNX model's metadata_props, if any (onnxruntime's custom map)."""
    items = dict(metadata_props)
    raw = items.get(METADATA_KEY)
    if raw is None:
        return None
    try:
        return check_schema(json.loads(raw), "ONNX metadata")
    except ValueError:
        return None


def digest(parts: Any) -> str:
    """sha256 of a JSON-serialisable description (keys sorted): the cache key of an intermediate."""
    payload = json.dumps({"cache_format": CACHE_FORMAT, "parts": parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cached_record(path: str, key: str) -> Optional[Dict[str, Any]]:
    """The record of a cached artifact if it exists, is intact and was made for ``key``."""
    if not os.path.isfile(path):
        return None
    record = read_sidecar(path)
    if not record or record.get("cache_key") != key or record.get("sha256") != sha256_file(path):
        return None
    try:
        # A hit marks the entry as used: `fgvc-edge cache prune --older-than` removes what went unused.
        os.utime(sidecar_path(path))
    except OSError:
        pass
    return record
