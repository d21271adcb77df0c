"""Record the Python API of a TensorRT version from its open-source binding sources, where no wheel exists.

TensorRT 8.5.2 (JetPack 5) has no wheel on PyPI to introspect with ``dump_trt_api.py``, but its Python
bindings are public: NVIDIA/TensorRT at tag 8.5.2, ``python/src/**/*.cpp`` (pybind11), the package's
``python/packaging/tensorrt/__init__.py`` and the C++ headers under ``include/`` (enum values). This script
reads those files — it never builds or runs them — and writes the same JSON as ``dump_trt_api.py``:

- class members: every ``.def``/``.def_property*``/``.def_readwrite``/``.def_static`` name of a
  ``py::class_``, plus those of its bound base classes, values an enum exports into it, and attributes the
  package ``__init__.py`` sets on it;
- enums: the ``.value`` names, numbered as in the headers' ``enum class`` definitions;
- module names: module-scope classes, enums, ``m.def`` and ``m.attr``, and the ``__init__.py`` top level;
- signatures of the calls fgvc_edge makes, from pybind11's argument annotations (``"name"_a = default``) or,
  without them, from the bound lambda's or C++ method's parameter list. Types are not recorded: these
  lines serve the arity check in test_tensorrt_builder.py.

    git -C <NVIDIA/TensorRT clone> archive 8.5.2 python include | tar -x -C /tmp/trt-8.5.2
    python tests/engine/trt_api/trt_api_from_source.py /tmp/trt-8.5.2 8.5.2 tests/engine/trt_api/trt-8.5.json

Checked by generating 8.6.1 from its tag and comparing with trt-8.6.json, which was introspected from the
real 8.6.1 module (see trt_api/README.md).
"""
import ast
import glob
import json
import os
import re
import sys
from typing import Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dump_trt_api import CLASSES, ENUMS, MODULE_FUNCTIONS, USED  # noqa: E402

_OPEN, _CLOSE = "([{", ")]}"


def strip_comments(text: str) -> str:
    """C++ source without comments (string literals kept intact)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2) + 2
        elif text[i] == '"':
            j = _string_end(text, i)
            out.append(text[i:j])
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _string_end(text: str, i: int) -> int:
    j = i + 1
    while text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return j + 1


# Macros the released wheels are built with besides those #defined in python/include: a pybind11 >= 2.6,
# CMake's ``<target>_EXPORTS`` of the full ``tensorrt`` module (not the lean/dispatch ones), and no
# ENABLE_INETWORK_SERIALIZE (an internal build option; undefined macros count as 0, as in cpp).
BUILD_MACROS = {"PYBIND11_VERSION_MAJOR": 2, "PYBIND11_VERSION_MINOR": 10, "tensorrt_EXPORTS": 1}


def defined_macros(include_dir: str) -> Dict[str, int]:
    macros = dict(BUILD_MACROS)
    for path in sorted(glob.glob(os.path.join(include_dir, "*.h"))):
        text = preprocess(strip_comments(open(path, encoding="utf-8").read()), macros)
        for name, value in re.findall(r"^\s*#\s*define\s+(\w+)\s+(\d+)\s*$", text, re.M):
            macros[name] = int(value)
    return macros


def preprocess(text: str, macros: Dict[str, int]) -> str:
    """``text`` with the lines of false ``#if``/``#ifdef``/``#else`` branches removed."""
    kept, stack = [], []  # stack of (this branch active, some branch taken)
    for line in text.splitlines():
        directive = re.match(r"\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)", line)
        outer = all(active for active, _ in stack)
        if directive is None:
            if outer:
                kept.append(line)
            continue
        word, condition = directive.groups()
        if word in ("if", "ifdef", "ifndef"):
            value = {"if": lambda: _condition(condition, macros), "ifdef": lambda: condition.strip() in macros,
                     "ifndef": lambda: condition.strip() not in macros}[word]()
            stack.append((value, value))
        elif word == "elif":
            taken = stack[-1][1]
            value = not taken and _condition(condition, macros)
            stack[-1] = (value, taken or value)
        elif word == "else":
            stack[-1] = (not stack[-1][1], True)
        else:
            stack.pop()
    return "\n".join(kept)


def _condition(condition: str, macros: Dict[str, int]) -> bool:
    expr = re.sub(r"defined\s*\(?\s*(\w+)\s*\)?", lambda m: "1" if m.group(1) in macros else "0", condition)
    expr = re.sub(r"[A-Za-z_]\w*", lambda m: str(macros.get(m.group(0), 0)), expr)
    expr = expr.replace("||", " or ").replace("&&", " and ").replace("!", " not ").replace("not =", "!=")
    if not re.fullmatch(r"[\d\s()<>=!a-z]+", expr):
        raise ValueError("cannot evaluate #if {}".format(condition))
    return bool(eval(expr))  # only numbers, comparisons and and/or/not remain (checked above)


def balanced_end(text: str, start: int) -> int:
    """Index just past the bracket group opening at ``text[start]``."""
    depth, i = 0, start
    while True:
        char = text[i]
        if char == '"':
            i = _string_end(text, i)
            continue
        if char == "'":
            i = text.index("'", i + 2 if text[i + 1] == "\\" else i + 1) + 1
            continue
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


def statement_end(text: str, start: int) -> int:
    """Index of the ``;`` that ends the statement starting at ``start`` (brackets skipped)."""
    i = start
    while text[i] != ";":
        if text[i] in _OPEN:
            i = balanced_end(text, i)
        elif text[i] == '"':
            i = _string_end(text, i)
        else:
            i += 1
    return i


def split_args(inner: str) -> List[str]:
    """Top-level comma-separated arguments of a call's inside (brackets and ``<>`` nesting respected)."""
    args, depth, current, i = [], 0, "", 0
    while i < len(inner):
        char = inner[i]
        if char == '"':
            j = _string_end(inner, i)
            current += inner[i:j]
            i = j
            continue
        if char in _OPEN or char == "<":
            depth += 1
        elif char in _CLOSE or (char == ">" and inner[i - 1] != "-"):
            depth -= 1
        if char == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    if current.strip():
        args.append(current.strip())
    return args


def template_args(text: str, start: int) -> Tuple[List[str], int]:
    """Arguments of the ``<...>`` opening at ``text[start]`` and the index past it."""
    depth, i = 0, start
    while True:
        if text[i] == "<":
            depth += 1
        elif text[i] == ">":
            depth -= 1
            if depth == 0:
                return split_args(text[start + 1 : i]), i + 1
        i += 1


def chained_calls(text: str) -> Iterator[Tuple[str, List[str]]]:
    """``(method, args)`` of each ``.method(...)`` chained at the top level of ``text``."""
    i = 0
    while i < len(text):
        match = re.match(r"\s*\.\s*(\w+)\s*\(", text[i:])
        if not match:
            if text[i] in _OPEN:
                i = balanced_end(text, i)
            elif text[i] == '"':
                i = _string_end(text, i)
            else:
                i += 1
            continue
        open_at = i + match.end() - 1
        end = balanced_end(text, open_at)
        yield match.group(1), split_args(text[open_at + 1 : end - 1])
        i = end


class Binding:
    def __init__(self, name: str, cpp: str, scope: str, bases: List[str]) -> None:
        self.name, self.cpp, self.scope, self.bases = name, cpp, scope, bases
        self.members: Dict[str, List[str]] = {}  # name → args of its (last) definition
        self.values: List[Tuple[str, str]] = []  # enums: (python name, C++ enumerator)
        self.exports = False


class Sources:
    """The pybind11 bindings of one TensorRT source tree."""

    def __init__(self, root: str) -> None:
        files = sorted(glob.glob(os.path.join(root, "python", "src", "**", "*.cpp"), recursive=True))
        macros = defined_macros(os.path.join(root, "python", "include"))
        self.text = "\n".join(preprocess(strip_comments(open(path, encoding="utf-8").read()), macros) for path in files)
        headers = sorted(glob.glob(os.path.join(root, "include", "*.h")))
        self.headers = "\n".join(strip_comments(open(path, encoding="utf-8").read()) for path in headers)
        self.classes: Dict[str, Binding] = {}
        self.enums: Dict[str, Binding] = {}
        self.module_functions: Dict[str, List[str]] = {}
        self.module_attrs: List[str] = []
        self._variables: Dict[str, Binding] = {}
        self._read_bindings()
        self._lambdas = self._read_lambdas()
        self.init_py = open(_package_init(root), encoding="utf-8").read()

    def _read_bindings(self) -> None:
        text = self.text
        pattern = re.compile(r"py::(class_|enum_|bind_vector|bind_map)\s*<|\b(\w+)\s*\.\s*(def\w*|attr)\s*\(")
        i = 0
        while True:
            match = pattern.search(text, i)
            if match is None:
                return
            end = statement_end(text, match.start())
            if match.group(1):
                self._read_declaration(text[match.start() : end], match.group(1))
            else:
                self._read_continuation(text[match.start() : end], match.group(2))
            i = end + 1

    def _read_declaration(self, statement: str, kind: str) -> None:
        targs, after = template_args(statement, statement.index("<"))
        head = re.match(r"\s*(\w*)\s*([({])", statement[after:])
        if head is None:
            return
        open_at = after + head.end() - 1
        close = balanced_end(statement, open_at)
        args = split_args(statement[open_at + 1 : close - 1])
        if len(args) < 2 or not args[1].startswith('"'):
            return  # bound by a template helper under a computed name
        if kind in ("bind_vector", "bind_map"):
            self.module_attrs.append(args[1].strip('"'))
            return
        binding = Binding(args[1].strip('"'), targs[0], args[0], targs[1:])
        if head.group(1):
            self._variables[head.group(1)] = binding
        (self.enums if kind == "enum_" else self.classes)[binding.name] = binding
        self._apply_calls(binding, statement[close:])

    def _read_continuation(self, statement: str, variable: str) -> None:
        if variable == "m":
            for method, args in chained_calls(statement[1:]):
                if method == "def":
                    self.module_functions[args[0].strip('"')] = args[1:]
                elif method == "attr":
                    self.module_attrs.append(args[0].strip('"'))
        elif variable in self._variables:
            self._apply_calls(self._variables[variable], statement[len(variable) :])

    @staticmethod
    def _apply_calls(binding: Binding, chain: str) -> None:
        for method, args in chained_calls(chain):
            if method == "value":
                binding.values.append((args[0].strip('"'), args[1]))
            elif method == "export_values":
                binding.exports = True
            elif method.startswith("def") and args and args[0].startswith('"'):
                binding.members[args[0].strip('"')] = args[1:]
            elif method == "def" and args and args[0].startswith("py::init"):
                binding.members["__init__"] = [args[0][len("py::init"):]] + args[1:]

    def _read_lambdas(self) -> Dict[str, List[str]]:
        found = {}
        for match in re.finditer(r"(\w+)\s*=\s*\[[^\]]*\]\s*\(", self.text):
            open_at = match.end() - 1
            found[match.group(1)] = split_args(self.text[open_at + 1 : balanced_end(self.text, open_at) - 1])
        return found

    # -- enums ----------------------------------------------------------------------------------------
    def enum_values(self, binding: Binding) -> Dict[str, int]:
        cpp_name = binding.cpp.split("::")[-1]
        numbers = self.header_enum(cpp_name)
        return {name: numbers[cpp.split("::")[-1]] for name, cpp in binding.values}

    def header_enum(self, cpp_name: str) -> Dict[str, int]:
        match = re.search(r"enum\s+(?:class\s+)?" + cpp_name + r"\b[^{;]*\{", self.headers)
        if match is None:
            raise KeyError("enum {} is not defined under include/".format(cpp_name))
        body = self.headers[match.end() : self.headers.index("}", match.end())]
        values: Dict[str, int] = {}
        following = 0
        for entry in split_args(body):
            name, _, expression = entry.partition("=")
            name = name.split()[0]
            if expression.strip():
                following = _evaluate(expression, values, self)
            values[name] = following
            following += 1
        return values

    # -- signatures -----------------------------------------------------------------------------------
    def parameters(self, args: List[str], owner: str) -> Optional[List[str]]:
        """Parameter names (``name=default`` when defaulted) of a bound callable, self excluded."""
        named = [a for a in args if re.match(r'^"\w+"_a\b', a) or a.startswith("py::arg(")]
        if named:
            return [self._param(a) for a in named]
        if not args:
            return None
        target = args[0]
        inner = re.match(r"(?:utils::deprecate\w*|py::cpp_function)\((.*)", target, re.S)
        if inner:
            target = split_args(inner.group(1).rstrip(")"))[0]
        target = target.strip().lstrip("(")
        lam = self._lambdas.get(target.split("::")[-1])
        if lam is not None:
            return ["arg{}".format(i) for i in range(len(lam) - (1 if owner else 0))]
        method = re.match(r"&(?:\w+::)*(\w+)::(\w+)$", target)
        if method:
            return self._header_params(method.group(1), method.group(2))
        function = re.match(r"&?(?:\w+::)*(\w+)$", target)
        if function:
            return self._header_params(None, function.group(1))
        return None

    @staticmethod
    def _param(annotation: str) -> str:
        name = re.match(r'(?:py::arg\()?"(\w+)"', annotation).group(1)
        return name + ("=…" if "=" in annotation else "")

    def _header_params(self, cls: Optional[str], method: str) -> Optional[List[str]]:
        text = self.headers
        if cls is not None:
            start = re.search(r"class\s+" + cls + r"\b[^;{]*\{", text)
            if start is None:
                return None
            text = text[start.end() - 1 : balanced_end(text, start.end() - 1)]
        match = re.search(r"\b" + method + r"\s*\(", text)
        if match is None:
            return None
        open_at = match.end() - 1
        params = split_args(text[open_at + 1 : balanced_end(text, open_at) - 1])
        params = [p for p in params if p not in ("void", "")]
        return ["arg{}".format(i) + ("=…" if "=" in p else "") for i, p in enumerate(params)]


def _package_init(root: str) -> str:
    """The package's ``__init__.py``: ``packaging/tensorrt`` up to 8.5, ``packaging/bindings_wheel`` from 8.6."""
    for parts in (("tensorrt",), ("bindings_wheel", "tensorrt")):
        path = os.path.join(root, "python", "packaging", *parts, "__init__.py")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError("no python/packaging/.../tensorrt/__init__.py under {}".format(root))


def _evaluate(expression: str, known: Dict[str, int], sources: Sources) -> int:
    """An enumerator's initialiser: a number, an earlier enumerator, ``1 << n``, or an ``Enum::kX``."""
    expr = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expression.strip())
    expr = re.sub(r"static_cast<\w+>", "", expr)
    for qualified in re.findall(r"\b(\w+)::(\w+)\b", expr):
        expr = expr.replace("::".join(qualified), str(sources.header_enum(qualified[0])[qualified[1]]))
    for name, value in sorted(known.items(), key=lambda item: -len(item[0])):
        expr = re.sub(r"\b" + name + r"\b", str(value), expr)
    if not re.fullmatch(r"[\d\s()<>|+\-x]+", expr):
        raise ValueError("cannot evaluate enumerator {!r}".format(expression))
    return int(eval(expr))  # only digits and arithmetic remain (checked above)


def init_py_names(source: str, classes: Dict[str, List[str]], enums: Dict[str, Dict[str, int]]) -> List[str]:
    """Top-level names of the package ``__init__.py``; adds the class attributes it sets to ``classes``."""
    names = []
    # Build-time placeholders (``##TENSORRT_MODULE##``, ``##TENSORRT_VERSION##``) are filled in at packaging.
    source = source.replace("##TENSORRT_MODULE##", "tensorrt")
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Import):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += [a.asname or a.name for a in node.names if a.name != "*"]
            if node.level and node.module:
                names.append(node.module.split(".")[0])  # importing a submodule binds it in the package
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.append(target.id)
                elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                    classes.setdefault(target.value.id, []).append(target.attr)
        elif isinstance(node, ast.For):
            names += [n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)]
            _setattr_loop(node, classes, enums)
    return names


def _setattr_loop(node: ast.For, classes: Dict[str, List[str]], enums: Dict[str, Dict[str, int]]) -> None:
    """``for a, v in X.Enum.__members__.items(): setattr(Cls, a, v)`` copies the enum's members onto Cls."""
    source = ast.unparse(node.iter)
    match = re.match(r"(\w+)\.(\w+)\.__members__\.items\(\)$", source)
    for call in ast.walk(node):
        if match and isinstance(call, ast.Call) and getattr(call.func, "id", "") == "setattr":
            owner = ast.unparse(call.args[0])
            classes.setdefault(owner, []).extend(enums.get(match.group(1) + "." + match.group(2), {}))


def generate(root: str, version: str, tag: str) -> dict:
    src = Sources(root)
    # Member names of every enum; their numbers (from the headers) only for the enums recorded.
    all_enums = {b.name: {name: -1 for name, _ in b.values} for b in src.enums.values()}
    numbered_by_order = []
    for name in ENUMS:
        if name in src.enums:
            try:
                all_enums[name] = src.enum_values(src.enums[name])
            except KeyError:  # its header is not in this tree (the ONNX parser's is a submodule from 10.0)
                all_enums[name] = {member: i for i, member in enumerate(all_enums[name])}
                numbered_by_order.append(name)
    by_cpp = {b.cpp.split("::")[-1]: b for b in src.classes.values()}
    members: Dict[str, List[str]] = {}
    for binding in src.classes.values():
        members[binding.name] = list(binding.members)
    # Enums bound inside a class are class attributes; export_values() copies their members there too.
    nested_enums: Dict[str, Dict[str, int]] = {}
    for binding in src.enums.values():
        owner = src._variables.get(binding.scope)
        if owner is not None:
            members[owner.name].append(binding.name)
            nested_enums[owner.name + "." + binding.name] = all_enums[binding.name]
            if binding.exports:
                members[owner.name].extend(all_enums[binding.name])
    extra: Dict[str, List[str]] = {}
    module_names = init_py_names(src.init_py, extra, nested_enums)

    def resolved(name: str) -> List[str]:
        binding = src.classes[name]
        names = set(members[name]) | set(extra.get(name, []))
        for base in binding.bases:
            base_binding = by_cpp.get(base.split("::")[-1])
            if base_binding is not None and base_binding.name != name:
                names |= set(resolved(base_binding.name))
        return sorted(n for n in names if not n.startswith("_"))

    module = {b.name for b in list(src.classes.values()) + list(src.enums.values()) if b.scope == "m"}
    module |= set(src.module_functions) | set(src.module_attrs) | set(module_names)
    for binding in src.enums.values():
        if binding.scope == "m" and binding.exports:
            module |= set(all_enums[binding.name])
    record = {
        "version": version,
        "module": sorted(n for n in module if not n.startswith("_")),
        "classes": {name: resolved(name) for name in CLASSES if name in src.classes},
        "enums": {name: all_enums[name] for name in ENUMS if name in all_enums and name in module},
        "signatures": _signatures(src),
        "enums_numbered_in_binding_order": numbered_by_order,
        "source": "generated by trt_api_from_source.py from NVIDIA/TensorRT {} python/src (pybind11), "
                  "python/packaging/tensorrt/__init__.py and include/ (no {} wheel exists to introspect)".format(tag, version),
    }
    return record


def _signatures(src: Sources) -> Dict[str, List[str]]:
    out = {}
    for cls_name, methods in USED.items():
        binding = src.classes.get(cls_name)
        for method in methods:
            if binding is None or method not in binding.members:
                continue
            params = src.parameters(binding.members[method], cls_name)
            out[cls_name + "." + method] = [] if params is None else [_line(method, ["self"] + params)]
    for name in MODULE_FUNCTIONS:
        if name in src.module_functions:
            params = src.parameters(src.module_functions[name], "")
            out[name] = [] if params is None else [_line(name, params)]
    return out


def _line(name: str, params: List[str]) -> str:
    return "{}({}) -> object".format(name, ", ".join(params))


def write(record: dict, output: str) -> None:
    with open(output, "w") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    root, version, output = sys.argv[1:4]
    write(generate(root, version, tag=sys.argv[4] if len(sys.argv) > 4 else version), output)
