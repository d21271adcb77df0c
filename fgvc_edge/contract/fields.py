"""Type and range checks for records read from files anyone can edit (checkpoint records, sidecars).

Each check reads one field and refuses a wrong type, range or length with one line naming the file, the
field and what it must be — before any value reaches arithmetic, a constructor or an allocation.
Valid on Python 3.8.
"""
from typing import Any, Callable, Dict, Optional, Sequence

from fgvc_edge.errors import UserInputError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KINDS: Dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "number": _is_number,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "str_list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}
_NAMES = {"int": "an integer", "number": "a number", "str": "a string", "bool": "true or false",
          "dict": "a JSON object", "list": "a list", "str_list": "a list of strings"}


def field(record: Dict[str, Any], key: str, kind: str, where: str, *, required: bool = False,
          low: Optional[int] = None, high: Optional[int] = None, choices: Sequence[Any] = (),
          hint: str = "") -> Any:
    """``record[key]`` when it is of ``kind`` (and within ``low``..``high`` / ``choices``); None when absent
    or null and not ``required``; else a one-line UserInputError ending in ``hint``."""
    value = record.get(key)
    if value is None:
        if required:
            raise UserInputError("{}: field {!r} is missing{}".format(where, key, hint))
        return None
    if not _KINDS[kind](value):
        raise UserInputError("{}: field {!r} must be {}, got {}{}".format(where, key, _NAMES[kind], _show(value), hint))
    if (low is not None and value < low) or (high is not None and value > high):
        raise UserInputError("{}: field {!r} must be in {}..{}, got {}{}".format(
            where, key, low if low is not None else "", high if high is not None else "", value, hint))
    if choices and value not in choices:
        raise UserInputError("{}: field {!r} must be one of {}, got {}{}".format(
            where, key, ", ".join(map(str, choices)), _show(value), hint))
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
