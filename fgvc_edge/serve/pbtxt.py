"""Protobuf text format, as Triton's ``config.pbtxt`` is written: a dict is a message, a list of dicts a
repeated message, a list of scalars a repeated scalar, :class:`Enum` a bare enum value.

Written by hand rather than through ``model_config_pb2`` so that ``triton-repo`` needs no tritonclient; the
tests parse every file we write with Triton's own schema. Valid on Python 3.8.
"""
import json
from typing import Any, Dict, List, Sequence

INDENT = "  "


class Enum(str):
    """An enum value (``TYPE_FP32``, ``KIND_GPU``): written without quotes."""


def render(message: Dict[str, Any], comments: Sequence[str] = ()) -> str:
    lines = ["# " + line for line in comments]
    lines.extend(_fields(message, 0))
    return "\n".join(lines) + "\n"


def _fields(message: Dict[str, Any], depth: int) -> List[str]:
    pad = INDENT * depth
    lines = []  # type: List[str]
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append("{}{} {{".format(pad, key))
            lines.extend(_fields(value, depth + 1))
            lines.append(pad + "}")
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            lines.append("{}{} [".format(pad, key))
            for position, item in enumerate(value):
                lines.append(INDENT * (depth + 1) + "{")
                lines.extend(_fields(item, depth + 2))
                lines.append(INDENT * (depth + 1) + ("}," if position < len(value) - 1 else "}"))
            lines.append(pad + "]")
        elif isinstance(value, list):
            lines.append("{}{}: [{}]".format(pad, key, ", ".join(_scalar(item) for item in value)))
        else:
            lines.append("{}{}: {}".format(pad, key, _scalar(value)))
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON's string escapes (\" \\ \n \t) are text format's; non-ASCII stays UTF-8, which it reads as is.
        return json.dumps(value, ensure_ascii=False)
    raise TypeError("no text-format form for {!r}".format(value))
