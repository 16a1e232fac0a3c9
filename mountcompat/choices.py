"""The record of every choice between strategies, and the forcing of a strategy.

Each attempt of a strategy leaves one :class:`ChoiceRecord` in :data:`LOG`: the matrix is
built from these, so a strategy is recorded ``used`` only once the operation has really
succeeded through it. Forcing comes from a caller (:func:`forced`) or from the environment
variable ``MOUNTCOMPAT_FORCE=feature=strategy,feature=strategy``; the caller wins.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from mountcompat.errors import UnknownStrategy, errno_name

ENV_FORCE = "MOUNTCOMPAT_FORCE"
OUTCOMES = ("used", "unsupported", "failed", "skipped")
# Records kept in memory: enough for any test or probe run, bounded for a long-lived process.
DEFAULT_CAPACITY = 10_000


@dataclass(frozen=True)
class ChoiceRecord:
    feature: str
    strategy: str
    outcome: str  # one of OUTCOMES; "skipped" = known unsupported from an earlier attempt
    errno: int | None = None
    errname: str | None = None
    message: str = ""  # the kernel's message or the exception text
    forced: bool = False
    time: float = 0.0
    # With tracing on (the suites): the calls the attempt made, in order, and the request's
    # plain arguments (flags, booleans, numbers of layers), which say what its path must hold.
    calls: tuple[dict[str, Any], ...] = ()
    request: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies, and the suites' plugin turns every record
        # of every test into JSON (seconds in all under an emulated CPU).
        return {name: getattr(self, name) for name in _RECORD_FIELDS}


_RECORD_FIELDS = tuple(f.name for f in fields(ChoiceRecord))


class ChoiceLog:
    """An in-process, thread-safe record of the last ``capacity`` choices.

    A long-lived process (a daemon mounting all day) must not grow without bound, so the
    oldest records are dropped. Positions from :meth:`mark` count every record ever added,
    so ``since(mark)`` still gives what came after the mark (less whatever was dropped, which
    :attr:`dropped` counts) and stays right across :meth:`reset`.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a choice log holds at least one record")
        self._records: deque[ChoiceRecord] = deque(maxlen=capacity)
        self._added = 0  # records ever added; marks are positions in this count
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._records.maxlen or 0

    @property
    def dropped(self) -> int:
        """Records added but no longer kept (dropped for room, or by reset)."""
        with self._lock:
            return self._added - len(self._records)

    def add(
        self,
        feature: str,
        strategy: str,
        outcome: str,
        *,
        err: int | None = None,
        message: str = "",
        forced: bool = False,
        calls: tuple[dict[str, Any], ...] = (),
        request: dict[str, Any] | None = None,
    ) -> ChoiceRecord:
        record = ChoiceRecord(
            feature,
            strategy,
            outcome,
            err,
            errno_name(err),
            message,
            forced,
            time.time(),
            calls,
            request,
        )
        with self._lock:
            self._records.append(record)
            self._added += 1
        return record

    def records(self, feature: str | None = None) -> list[ChoiceRecord]:
        with self._lock:
            return [r for r in self._records if feature is None or r.feature == feature]

    def mark(self) -> int:
        """A position to read from later: ``since(mark)`` gives the records added after it."""
        with self._lock:
            return self._added

    def since(self, mark: int) -> list[ChoiceRecord]:
        with self._lock:
            oldest_kept = self._added - len(self._records)
            return list(itertools.islice(self._records, max(0, mark - oldest_kept), None))

    def reset(self) -> None:
        """Drop every record; marks taken before stay valid (they see what comes next)."""
        with self._lock:
            self._records.clear()


LOG = ChoiceLog()

_forced: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "mountcompat_forced", default=None
)


def parse_force(text: str) -> dict[str, str]:
    """``overlay.layers=lowerdir-string,mount.attr=remount`` -> a mapping."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        feature, sep, strategy = item.partition("=")
        if not sep or not feature or not strategy:
            raise UnknownStrategy(f"{ENV_FORCE}: {item!r} is not feature=strategy")
        feature, strategy = feature.strip(), strategy.strip()
        if result.get(feature, strategy) != strategy:
            from mountcompat.errors import ForcingRefused

            raise ForcingRefused(
                f"{ENV_FORCE}: {feature} is forced to both {result[feature]} and {strategy}"
            )
        result[feature] = strategy
    return result


def forced_strategy(feature: str) -> str | None:
    from_caller = _forced.get() or {}
    if feature in from_caller:
        return from_caller[feature]
    return environment_forcing().get(feature)


def environment_forcing() -> Mapping[str, str]:
    """``MOUNTCOMPAT_FORCE``, parsed and checked: :class:`UnknownStrategy` or
    :class:`ForcingRefused` if it is not what the library would accept."""
    return _forced_by_environment(os.environ.get(ENV_FORCE, ""))


@functools.cache
def _forced_by_environment(text: str) -> Mapping[str, str]:
    """The environment's forcing, checked once per value: a misspelt feature must not be
    ignored, or the run would quietly take the default path."""
    from mountcompat.strategy import validate_forcing

    choices = parse_force(text)
    validate_forcing(choices, from_environment=True)
    return choices


def forget_environment_forcing() -> None:
    """Parse MOUNTCOMPAT_FORCE again on next use (registered with reset_probes)."""
    _forced_by_environment.cache_clear()


@contextlib.contextmanager
def forced(choices: Mapping[str, str]) -> Iterator[None]:
    """Within the block, the named features use only the named strategies."""
    from mountcompat.strategy import validate_forcing

    validate_forcing(choices)
    token = _forced.set({**(_forced.get() or {}), **choices})
    try:
        yield
    finally:
        _forced.reset(token)
