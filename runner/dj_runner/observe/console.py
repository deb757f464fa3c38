"""Progress display for ``dj-runner run``: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def start(self, total_partitions: int, total_rows: int, done: int) -> None: ...
    def stage(self, name: str) -> None: ...
    def partition_done(self, pid: int, rows_out: int) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainProgress:
    """One line per event; for logs and non-terminals."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.total = 0
        self.done = 0
        self.t0 = time.monotonic()

    def _print(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def start(self, total_partitions: int, total_rows: int, done: int) -> None:
        self.total, self.done = total_partitions, done
        self._print(f"{total_partitions} partitions, {total_rows} samples; {done} already done")

    def stage(self, name: str) -> None:
        self._print(name)

    def partition_done(self, pid: int, rows_out: int) -> None:
        self.done += 1
        self._print(f"partition {pid} done ({rows_out} rows) [{self.done}/{self.total}]")

    def note(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        pass


class RichProgress:
    """A live progress bar (rich) for interactive terminals."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = None

    def start(self, total_partitions: int, total_rows: int, done: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("partitions", total=total_partitions, completed=done)

    def stage(self, name: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=name)

    def partition_done(self, pid: int, rows_out: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task)

    def note(self, text: str) -> None:
        self._progress.console.print(text)

    def close(self) -> None:
        self._progress.stop()


class NoProgress:
    def start(self, total_partitions: int, total_rows: int, done: int) -> None: ...
    def stage(self, name: str) -> None: ...
    def partition_done(self, pid: int, rows_out: int) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


def make_progress(stream: TextIO = sys.stderr) -> Progress:
    return RichProgress() if stream.isatty() else PlainProgress(stream)
