"""``triton-repo``: a Triton model repository for the official ``tritonserver`` container.

For each artifact ``NAME`` (its file stem), three models::

    NAME/                  the classifier: onnxruntime backend (1/model.onnx) or tensorrt (1/model.plan),
                           labels.txt on its logits output
    NAME_preprocess/       Python backend: encoded images → the classifier's input, with our preprocessing
    NAME_ensemble/         image bytes → NAME_preprocess → NAME: clients send JPEG/PNG bytes

Everything Triton needs to know comes from the sidecar: tensor names, size, classes, labels, preprocessing and
the batch. Triton batches only a model whose batch axis is free (a dynamic-batch ONNX, an engine whose profile
starts at 1); an artifact of fixed batch B is written with ``max_batch_size: 0`` and the batch in its dims, so
Triton itself refuses any other batch. That is also how a batch-dependent model (RBI) is written, batching off,
since Triton's batcher would otherwise put strangers' images into one batch. Reads sidecars only: no runner,
GPU or TensorRT is needed to write the repository.
"""
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fgvc_edge.contract import preprocess as preprocess_contract
from fgvc_edge.contract.sidecar import read_sidecar
from fgvc_edge.errors import UserInputError
from fgvc_edge.serve.models import IMAGE_INPUT, check_unique_names
from fgvc_edge.serve.pbtxt import Enum, render

PREPROCESS_SUFFIX = "_preprocess"
ENSEMBLE_SUFFIX = "_ensemble"
LABELS_FILE = "labels.txt"
PYTHON_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_python", "model.py")
BACKENDS = {".onnx": ("onnxruntime", "model.onnx"), ".engine": ("tensorrt", "model.plan"),
            ".plan": ("tensorrt", "model.plan")}


@dataclass(frozen=True)
class RepositorySettings:
    max_batch: int = 16
    max_queue_delay_us: int = 0
    instances: int = 1
    onnx_on_gpu: bool = False  # KIND_CPU by default: the CPU deployable is what an .onnx artifact is for

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise UserInputError("--max-batch and --instances must be >= 1, --max-queue-delay-us >= 0")


@dataclass(frozen=True)
class ArtifactFacts:
    """What the repository needs to know of one artifact, from its sidecar."""

    path: str
    name: str
    backend: str
    model_file: str
    input_name: str
    output_name: str
    input_size: int
    labels: List[str]
    preprocess: Dict[str, Any]
    fixed_batch: Optional[int]  # None: the batch axis is free
    batch_limit: Optional[int]  # largest batch the artifact takes (an engine's profile), None: unbounded
    batch_dependent: bool

    def max_batch_size(self, settings: RepositorySettings) -> int:
        """Triton's ``max_batch_size``: 0 (no batching, batch in the dims) for a fixed batch."""
        if self.fixed_batch is not None:
            return 0
        return min(settings.max_batch, self.batch_limit or settings.max_batch)

    def lead(self) -> List[int]:
        """Leading dims: the fixed batch where Triton does not batch, nothing where it does."""
        return [] if self.fixed_batch is None else [self.fixed_batch]


@dataclass
class RepositoryResult:
    path: str
    models: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def write_triton_repository(
    artifacts: Sequence[str], output: str, settings: RepositorySettings = RepositorySettings()
) -> RepositoryResult:
    """Write the three models of every artifact into ``output``; a model folder already there is replaced whole."""
    if not artifacts:
        raise UserInputError("triton-repo needs at least one artifact (.onnx or .engine)")
    names = check_unique_names(artifacts)
    facts = [artifact_facts(path, name) for path, name in zip(artifacts, names)]
    result = RepositoryResult(path=str(output))
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserInputError("output {} is a file; give a folder".format(output))
    try:
        os.makedirs(output, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".fgvc-triton-", dir=output)
    except OSError as exc:
        raise UserInputError("cannot write {}: {}".format(output, exc.strerror or exc)) from None
    try:
        for fact in facts:
            result.models.extend(_write_models(fact, staging, settings))
            note = _batch_comment(fact)
            if note:
                result.notes.append(note)
        for model in result.models:
            _replace_folder(os.path.join(staging, model), os.path.join(output, model), staging)
    except OSError as exc:
        raise UserInputError("cannot write {}: {}".format(output, exc.strerror or exc)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def artifact_facts(path: str, name: str) -> ArtifactFacts:
    path = str(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in BACKENDS:
        raise UserInputError("cannot put {} in a Triton repository: expected an .onnx or .engine file".format(path))
    if not os.path.isfile(path):
        raise UserInputError("no such file: {}".format(path))
    record = read_sidecar(path)
    if not record:
        raise UserInputError("{} has no sidecar ({}.json): write it with fgvc-edge export or build".format(path, path))
    missing = [key for key in ("input_size", "num_classes", "preprocess") if not record.get(key)]
    if missing:
        raise UserInputError("{}'s sidecar lacks {}".format(path, ", ".join(missing)))
    backend, model_file = BACKENDS[suffix]
    fixed, limit = _batch_axis(record, path, backend)
    classes = int(record["num_classes"])
    names = [str(n) for n in record.get("class_names") or []]
    return ArtifactFacts(
        path=path, name=name, backend=backend, model_file=model_file,
        input_name=str(record.get("input_name") or "input"), output_name=str(record.get("output_name") or "logits"),
        input_size=int(record["input_size"]),
        labels=[names[i] if i < len(names) else str(i) for i in range(classes)],
        preprocess=dict(record["preprocess"]), fixed_batch=fixed, batch_limit=limit,
        batch_dependent=bool(record.get("batch_dependent", False)),
    )


def _batch_axis(record: Dict[str, Any], path: str, backend: str) -> Tuple[Optional[int], Optional[int]]:
    """(fixed batch or None, largest batch or None) from an ONNX sidecar's batch or an engine's profile."""
    if backend == "tensorrt":
        profile = record.get("batch_profile") or {}
        low, high = int(profile.get("min", 1)), int(profile.get("max", 1))
        if low == high:
            fixed, limit = low, high  # type: Tuple[Optional[int], Optional[int]]
        elif low > 1:
            raise UserInputError(
                "{}'s profile takes batches {}-{}; Triton batches from 1: rebuild with a profile from 1".format(
                    path, low, high)
            )
        else:
            fixed, limit = None, high
    else:
        batch = record.get("batch", (record.get("input_shape") or [1])[0])
        fixed, limit = (None, None) if batch == "dynamic" else (int(batch), int(batch))
    if fixed is None and record.get("batch_dependent"):
        raise UserInputError("{} is batch-dependent but has a free batch axis: re-export it with a fixed --batch".format(path))
    return fixed, limit


# -- the three models -----------------------------------------------------------------------------------------
def _write_models(fact: ArtifactFacts, root: str, settings: RepositorySettings) -> List[str]:
    classifier, preprocess, ensemble = fact.name, fact.name + PREPROCESS_SUFFIX, fact.name + ENSEMBLE_SUFFIX
    folder = _version_folder(root, classifier)
    shutil.copyfile(fact.path, os.path.join(folder, fact.model_file))
    _write_text(os.path.join(root, classifier, LABELS_FILE), "".join(_label_line(l) for l in fact.labels))
    _write_text(os.path.join(root, classifier, "config.pbtxt"), classifier_config(fact, settings))

    folder = _version_folder(root, preprocess)
    shutil.copyfile(PYTHON_MODEL, os.path.join(folder, "model.py"))
    # The contract's own module, unchanged: the container runs the preprocessing we validate against.
    shutil.copyfile(preprocess_contract.__file__, os.path.join(folder, "fgvc_preprocess.py"))
    _write_text(os.path.join(root, preprocess, "config.pbtxt"), preprocess_config(fact, settings))

    _version_folder(root, ensemble)  # an ensemble has no files, but Triton wants its version folder
    _write_text(os.path.join(root, ensemble, LABELS_FILE), "".join(_label_line(l) for l in fact.labels))
    _write_text(os.path.join(root, ensemble, "config.pbtxt"), ensemble_config(fact, settings))
    return [classifier, preprocess, ensemble]


def classifier_config(fact: ArtifactFacts, settings: RepositorySettings) -> str:
    gpu = fact.backend == "tensorrt" or settings.onnx_on_gpu
    size, lead = fact.input_size, fact.lead()
    config = {
        "name": fact.name,
        "backend": fact.backend,
        "max_batch_size": fact.max_batch_size(settings),
        "input": [{"name": fact.input_name, "data_type": Enum("TYPE_FP32"), "dims": lead + [3, size, size]}],
        "output": [{"name": fact.output_name, "data_type": Enum("TYPE_FP32"), "dims": lead + [len(fact.labels)],
                    "label_filename": LABELS_FILE}],
        "instance_group": [{"kind": Enum("KIND_GPU" if gpu else "KIND_CPU"), "count": settings.instances}],
    }  # type: Dict[str, Any]
    _add_batcher(config, fact, settings)
    if fact.backend == "onnxruntime" and fact.fixed_batch is None:
        # As `serve` runs it: the batcher varies the batch, and ORT's CPU arena would grow with every new mix of
        # sizes (onnxruntime_backend's `enable_mem_arena`; see runtime.onnx_runner.session_options).
        config["parameters"] = [{"key": "enable_mem_arena", "value": {"string_value": "0"}}]
    return render(config, _header(fact, "classifier"))


def preprocess_config(fact: ArtifactFacts, settings: RepositorySettings) -> str:
    size, lead = fact.input_size, fact.lead()
    config = {
        "name": fact.name + PREPROCESS_SUFFIX,
        "backend": "python",
        "max_batch_size": fact.max_batch_size(settings),
        "input": [{"name": IMAGE_INPUT, "data_type": Enum("TYPE_STRING"), "dims": lead + [1]}],
        "output": [{"name": "input", "data_type": Enum("TYPE_FP32"), "dims": lead + [3, size, size]}],
        "instance_group": [{"kind": Enum("KIND_CPU"), "count": settings.instances}],
        "parameters": [{"key": "preprocess", "value": {"string_value": json.dumps(fact.preprocess, sort_keys=True)}}],
    }  # type: Dict[str, Any]
    _add_batcher(config, fact, settings)
    return render(config, _header(fact, "preprocessing (Python backend; needs numpy and Pillow)"))


def ensemble_config(fact: ArtifactFacts, settings: RepositorySettings) -> str:
    lead = fact.lead()
    config = {
        "name": fact.name + ENSEMBLE_SUFFIX,
        "platform": "ensemble",
        "max_batch_size": fact.max_batch_size(settings),
        "input": [{"name": IMAGE_INPUT, "data_type": Enum("TYPE_STRING"), "dims": lead + [1]}],
        "output": [{"name": fact.output_name, "data_type": Enum("TYPE_FP32"), "dims": lead + [len(fact.labels)],
                    "label_filename": LABELS_FILE}],
        "ensemble_scheduling": {"step": [
            {"model_name": fact.name + PREPROCESS_SUFFIX, "model_version": -1,
             "input_map": {"key": IMAGE_INPUT, "value": IMAGE_INPUT},
             "output_map": {"key": "input", "value": "preprocessed"}},
            {"model_name": fact.name, "model_version": -1,
             "input_map": {"key": fact.input_name, "value": "preprocessed"},
             "output_map": {"key": fact.output_name, "value": fact.output_name}},
        ]},
    }  # type: Dict[str, Any]
    return render(config, _header(fact, "ensemble: encoded images → {} → {}".format(
        fact.name + PREPROCESS_SUFFIX, fact.name)))


def _add_batcher(config: Dict[str, Any], fact: ArtifactFacts, settings: RepositorySettings) -> None:
    if fact.fixed_batch is None:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": settings.max_queue_delay_us}


def _header(fact: ArtifactFacts, role: str) -> List[str]:
    lines = ["{}: {} of {}, written by fgvc-edge triton-repo.".format(fact.name, role, os.path.basename(fact.path))]
    note = _batch_comment(fact)
    return lines + [note] if note else lines


def _batch_comment(fact: ArtifactFacts) -> Optional[str]:
    if fact.batch_dependent:
        return ("{}: batching off, the model's output depends on its batch (RBI); it takes exactly {} image(s) "
                "per request.".format(fact.name, fact.fixed_batch))
    if fact.fixed_batch is not None:
        return ("{}: batching off, exported with a fixed batch of {}; export with --batch dynamic to let Triton "
                "batch requests.".format(fact.name, fact.fixed_batch))
    return None


def _label_line(label: str) -> str:
    return label.replace("\n", " ") + "\n"


def _version_folder(root: str, model: str) -> str:
    folder = os.path.join(root, model, "1")
    os.makedirs(folder)
    return folder


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _replace_folder(new: str, target: str, staging: str) -> None:
    """Move ``new`` onto ``target``; an old ``target`` goes to the staging folder, which is removed after."""
    if os.path.lexists(target):
        os.rename(target, os.path.join(staging, ".replaced-" + os.path.basename(target)))
    os.rename(new, target)
