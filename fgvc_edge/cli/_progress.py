"""Progress of long commands on stderr, never silent: on a terminal a rich bar with counts, elapsed time and
time left; elsewhere (CI logs, ``make bench | tee``) plain lines — one per step, or one per tenth of a count
(calibration images) — each with the count, the elapsed time and the time left."""
import contextlib
import datetime
import os
import time
from typing import Any, Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from fgvc_edge.cli._common import err_console


QUIET_ENV = "FGVC_EDGE_QUIET"  # set (not 0): commands print no progress, only their results and errors


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Tracker:
    """One counted task: ``describe`` starts a step, ``advance`` counts work done, ``set_total`` fixes the count."""

    def describe(self, text: str) -> None:
        raise NotImplementedError

    def advance(self, amount: int = 1) -> None:
        raise NotImplementedError

    def set_total(self, total: int) -> None:
        raise NotImplementedError


class _RichTracker(Tracker):
    def __init__(self, progress: Any, label: str, total: Optional[int]) -> None:
        self._progress = progress
        self._label = label
        self._task = progress.add_task(label, total=total)

    def describe(self, text: str) -> None:
        self._progress.update(self._task, description="{}: {}".format(self._label, text))

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task, amount)

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)


class _PlainTracker(Tracker):
    """Lines for logs. ``per_step``: a line at each ``describe``; else a line at each tenth of the total."""

    def __init__(self, console: Console, label: str, total: Optional[int], per_step: bool) -> None:
        self._console = console
        self._label = label
        self._total = total
        self._per_step = per_step
        self._done = 0
        self._tenths = 0
        self._started = time.monotonic()

    def _line(self, text: str = "") -> None:
        elapsed = time.monotonic() - self._started
        parts = [self._label]
        if self._total:
            parts.append("{}/{}".format(self._done, self._total))
        parts.append("{} elapsed".format(_clock(elapsed)))
        if self._total and 0 < self._done < self._total:
            parts.append("~{} left".format(_clock(elapsed / self._done * (self._total - self._done))))
        if text:
            parts.append(text)
        self._console.print(" · ".join(parts), markup=False, highlight=False, soft_wrap=True)

    def describe(self, text: str) -> None:
        if self._per_step:
            self._line(text)

    def advance(self, amount: int = 1) -> None:
        self._done += amount
        if self._per_step or not self._total:
            return
        tenths = min(10, self._done * 10 // self._total)
        if tenths > self._tenths:
            self._tenths = tenths
            self._line()

    def set_total(self, total: int) -> None:
        self._total = total


class _SilentTracker(Tracker):
    """``FGVC_EDGE_QUIET=1``: no progress lines (errors and results still print)."""

    def describe(self, text: str) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass


class _Counted(MofNCompleteColumn):
    """N of M, blank for a task of uncounted steps."""

    def render(self, task: Any) -> Text:
        return Text("") if task.total is None else super().render(task)


class _Left(TimeRemainingColumn):
    """Time left as "~0:01:20 left", blank for a task of uncounted steps."""

    def render(self, task: Any) -> Text:
        return Text("") if task.total is None else Text.assemble("~", super().render(task), " left")


class ProgressDisplay:
    """Hands out trackers that draw on one display (a rich Progress on a terminal, plain lines otherwise)."""

    def __init__(self, console: Optional[Console], rich_progress: Any) -> None:
        self._console = console
        self._rich = rich_progress

    def task(self, label: str, total: Optional[int] = None, *, per_step: bool = True) -> Tracker:
        """A tracker; ``total`` None for steps that cannot be counted ahead (then no count and no time left)."""
        if self._console is None:
            return _SilentTracker()
        if self._rich is not None:
            return _RichTracker(self._rich, label, total)
        return _PlainTracker(self._console, label, total, per_step)


@contextlib.contextmanager
def progress_display(console: Optional[Console] = None) -> Iterator[ProgressDisplay]:
    """A display on ``console`` (stderr by default); rich bars only when it is a terminal."""
    if console is None and os.environ.get(QUIET_ENV, "") not in ("", "0"):
        yield ProgressDisplay(None, None)
        return
    console = console or err_console
    if not console.is_terminal:
        yield ProgressDisplay(console, None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), _Counted(), TimeElapsedColumn(), _Left())
    with Progress(*columns, console=console, transient=True) as rich_progress:
        yield ProgressDisplay(console, rich_progress)
