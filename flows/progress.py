"""Progress bars for long CLI work, fed by ordinary log records.

Library code reports progress as an INFO record on a logger under ``forewarn.progress``
(``forewarn.progress.nightly``, ``.backtest``, ``.dispatch``, ``.weather``) with
``extra={"step": done, "steps": total}``; the last part of the logger name names the bar and
the message says what is being done. Nothing there knows about terminals: without a display
the records are log lines like any other (in ``<home>/logs/forewarn.log`` and, off a
terminal, on stderr), which is also how a scheduled run shows its progress. On a terminal,
:func:`progress_bars` turns them into one rich progress bar per job and keeps them off the
console log lines (log lines still print, above the bars).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

PROGRESS_LOGGER = "forewarn.progress"


def is_progress(record: logging.LogRecord) -> bool:
    """Whether ``record`` reports progress (a logger under ``forewarn.progress`` with a step)."""
    return (record.name == PROGRESS_LOGGER or record.name.startswith(PROGRESS_LOGGER + ".")) \
        and isinstance(getattr(record, "step", None), int)


class ProgressHandler(logging.Handler):
    """Turns progress records into rich progress tasks, one per job (logger name)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if not is_progress(record):
            return
        job = record.name.rsplit(".", 1)[-1]
        steps: Any = getattr(record, "steps", None)
        description = f"{job}: {record.getMessage()}"
        if job not in self.tasks:
            self.tasks[job] = self.progress.add_task(description, total=steps)
        self.progress.update(self.tasks[job], completed=int(getattr(record, "step", 0)),
                             total=steps, description=description)


class _NotProgress(logging.Filter):
    """Keeps progress records off the console while the bars show them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_progress(record)


def console_handlers() -> list[logging.StreamHandler]:
    """The handlers that write log lines to stderr (root's, Prefect's), not to files."""
    found: list[logging.StreamHandler] = []
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if (isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler)
                    and getattr(handler, "stream", None) in (sys.stderr, sys.__stderr__)
                    and handler not in found):
                found.append(handler)
    return found


def wants_bars(quiet: bool) -> bool:
    """Bars only for a person at a terminal: not with --quiet, not when stderr is a file or a
    pipe (logs and tests stay plain text)."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Progress | None]:
    """Show progress records as bars on stderr while the block runs (if ``enabled``)."""
    if not enabled:
        yield None
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True))
    handler = ProgressHandler(progress)
    hide = _NotProgress()
    source = logging.getLogger(PROGRESS_LOGGER)
    consoles = console_handlers()
    with progress:  # rich now proxies sys.stderr: lines written there print above the bars
        streams = {h: h.setStream(sys.stderr) for h in consoles}
        for h in consoles:
            h.addFilter(hide)
        source.addHandler(handler)
        level = source.level
        if source.getEffectiveLevel() > logging.INFO:
            source.setLevel(logging.INFO)
        try:
            yield progress
        finally:
            source.removeHandler(handler)
            source.setLevel(level)
            for h, stream in streams.items():
                h.removeFilter(hide)
                if stream is not None:
                    h.setStream(stream)
