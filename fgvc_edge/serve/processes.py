"""The processes a server is made of (this process's tritonserver child and its backend stubs), from /proc.

Used to check that a stopped server leaves no process behind and to measure its memory under load.
Linux only (Triton's own platform); valid on Python 3.8.
"""
import os
from typing import Dict, List, NamedTuple, Optional

PROC = "/proc"


class ProcessInfo(NamedTuple):
    pid: int
    name: str
    rss_bytes: int


def process_tree(root: int) -> List[ProcessInfo]:
    """``root`` and all its descendants alive now (an empty list when ``root`` is gone)."""
    parents = _parents()
    if root not in parents:
        return []
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    infos = [_info(pid) for pid in tree]
    return [info for info in infos if info is not None]


def _parents() -> Dict[int, int]:
    parents = {}
    for entry in os.listdir(PROC):
        if entry.isdigit():
            stat = _read("{}/{}/stat".format(PROC, entry))
            if stat:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
                parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def _info(pid: int) -> Optional[ProcessInfo]:
    status = _read("{}/{}/status".format(PROC, pid))
    if not status:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])  # a zombie has no VmRSS
    return ProcessInfo(pid, fields.get("Name", "?").strip(), rss_kb * 1024)


def _read(path: str) -> str:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:  # the process ended while we looked
        return ""
