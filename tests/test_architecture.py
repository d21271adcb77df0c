"""The package layout the house style asks for: no import circles between subpackages (function-level
imports included), a torch-free contract every stage shares, and transforms that import no model class."""
import ast
import importlib
import inspect
import os
from collections import defaultdict
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from torch import nn

import fgvc_edge

PACKAGE_DIR = os.path.dirname(fgvc_edge.__file__)


def _modules() -> Iterator[Tuple[str, str]]:
    """(dotted module name, path) of every module in the package."""
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
                yield (rel[: -len(".__init__")] if rel.endswith(".__init__") else rel), path


def _imports(module: str, path: str) -> Iterator[Tuple[str, List[str]]]:
    """(imported module, imported names) of every import statement anywhere in the file, relative ones resolved."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [alias.name for alias in node.names]


def _subpackage(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "fgvc_edge" else ""


def subpackage_graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = defaultdict(set)
    for module, path in _modules():
        source = _subpackage(module)
        for target, names in _imports(module, path):
            targets = [target] + ([target + "." + n for n in names] if target == "fgvc_edge" else [])
            for dotted in targets:
                sub = _subpackage(dotted)
                if sub and source and sub != source:
                    graph[source].add(sub)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of the graph as a path [a, b, …, a], or [] when it has none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) == []


def test_no_import_circle_between_subpackages():
    cycle = find_cycle(subpackage_graph())
    assert not cycle, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("leaf,allowed", [
    ("contract", {"errors", "_io"}),
    ("structure", {"errors"}),
    ("caches", {"errors"}),
    ("runtime", {"contract", "errors", "_io"}),
])
def test_shared_layers_import_only_what_lies_below_them(leaf, allowed):
    assert subpackage_graph().get(leaf, set()) <= allowed


def test_the_preprocessing_module_imports_nothing_of_fgvc_edge_but_its_errors():
    # serve/ copies contract/preprocess.py into Triton Python-backend models, where fgvc-edge is absent and only
    # fgvc_edge.errors is stood in for (serve/triton_python/model.py).
    path = os.path.join(PACKAGE_DIR, "contract", "preprocess.py")
    ours = {target for target, _ in _imports("fgvc_edge.contract.preprocess", path) if target.startswith("fgvc_edge")}
    assert ours <= {"fgvc_edge.errors"}


def test_the_preprocessing_resize_bound_is_four_input_sizes():
    from fgvc_edge.contract.limits import MAX_INPUT_SIZE
    from fgvc_edge.contract.preprocess import MAX_RESIZE_SIZE

    assert MAX_RESIZE_SIZE == 4 * MAX_INPUT_SIZE


def test_every_stage_takes_preprocessing_and_sidecars_from_the_contract():
    users = {source for source, targets in subpackage_graph().items() if "contract" in targets}
    assert {"models", "export", "precision", "engine", "runtime", "datasets", "evaluate"} <= users
    assert not os.path.exists(os.path.join(PACKAGE_DIR, "runtime", "sidecar.py"))
    assert not os.path.exists(os.path.join(PACKAGE_DIR, "runtime", "preprocess.py"))


def _is_model_class(obj: object) -> bool:
    return inspect.isclass(obj) and issubclass(obj, nn.Module)


def test_transforms_import_no_model_class():
    offending = []
    for module, path in _modules():
        if not module.startswith("fgvc_edge.transforms"):
            continue
        for target, names in _imports(module, path):
            if not target.startswith("fgvc_edge.models"):
                continue
            if not names:
                offending.append("{}: import {}".format(module, target))
                continue
            imported = importlib.import_module(target)
            for name in names:
                obj = getattr(imported, name, None)
                if obj is None or inspect.ismodule(obj) or _is_model_class(obj):
                    offending.append("{}: from {} import {}".format(module, target, name))
    assert not offending, offending
