"""Terminal output: one live progress line per kernel, and plain lines for what happened.

State changes are printed as ordinary lines too, so a log without a terminal (CI) tells the
same story as the live display.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class MatrixUI:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[kernel]:<12}"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            # A CI log is read as lines, and a spinner redrawn ten times a second fills it
            # with frames (act hands the steps a terminal): the plain lines tell it all.
            disable=not self.console.is_terminal or bool(os.environ.get("GITHUB_ACTIONS")),
        )
        self.tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> MatrixUI:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def say(self, message: str) -> None:
        self.progress.console.print(message)

    def add_kernel(self, name: str) -> None:
        with self._lock:
            self.tasks[name] = self.progress.add_task("waiting", kernel=name, total=None)

    def update(self, name: str, description: str) -> None:
        with self._lock:
            task = self.tasks.get(name)
        if task is not None:
            self.progress.update(task, description=description)

    def finish(self, name: str, description: str) -> None:
        with self._lock:
            task = self.tasks.get(name)
        if task is not None:
            self.progress.update(task, description=description, total=1, completed=1)
            self.progress.stop_task(task)
        self.say(f"{name}: {description}")

    def milestone(self, name: str, description: str) -> None:
        """Update the live line and print a plain line too (for logs without a terminal)."""
        self.update(name, description)
        self.say(f"{name}: {description}")
