"""Features and their strategies: try in order, remember what the kernel cannot do, record all.

A strategy is a small function with a docstring that says which kernels need it, the errno or
message that tells, and why it exists. Its ``unsupported`` errnos are the kernel's way of saying
"not here"; any other error is a real failure and is raised, never hidden by a fallback.
Only the errnos in ``cache_on`` (those that can only mean the feature is absent, like ENOSYS)
are remembered for the rest of the process: an EINVAL may depend on the request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mountcompat.choices import LOG, forced_strategy
from mountcompat.errors import (
    Attempt,
    NoStrategyWorked,
    StrategyUnsupported,
    UnknownStrategy,
)

T = TypeVar("T")


class Unsupported(Exception):
    """Raised by a strategy that found, without a failing syscall, that it cannot work here."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err
        self.message = message


@dataclass(frozen=True)
class Strategy(Generic[T]):
    name: str
    run: Callable[..., T]
    unsupported: frozenset[int] = frozenset()
    cache_on: frozenset[int] = frozenset()

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()


def _kernel_message(exc: BaseException) -> str:
    messages = getattr(exc, "kernel_messages", None)
    return "; ".join(messages) if messages else str(exc)


@dataclass
class Feature(Generic[T]):
    id: str
    summary: str
    strategies: list[Strategy[T]]
    _known_unsupported: dict[str, Attempt] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def strategy(self, name: str) -> Strategy[T]:
        for s in self.strategies:
            if s.name == name:
                return s
        names = ", ".join(s.name for s in self.strategies)
        raise UnknownStrategy(f"{self.id}: no strategy {name!r} (known: {names})")

    def reset(self) -> None:
        with self._lock:
            self._known_unsupported.clear()

    def __call__(self, *args: Any, force: str | None = None, **kwargs: Any) -> T:
        chosen = force or forced_strategy(self.id)
        if chosen is not None:
            return self._attempt(self.strategy(chosen), args, kwargs, forced=True)
        attempts: list[Attempt] = []
        for s in self.strategies:
            with self._lock:
                known = self._known_unsupported.get(s.name)
            if known is not None:
                LOG.add(self.id, s.name, "skipped", err=known.errno, message=known.message)
                attempts.append(known)
                continue
            try:
                return self._attempt(s, args, kwargs, forced=False)
            except StrategyUnsupported as exc:
                if (exc.feature, exc.strategy) != (self.id, s.name):
                    raise
                attempts.append(Attempt(s.name, exc.errno, exc.message))
        raise NoStrategyWorked(self.id, attempts)

    def _attempt(
        self, s: Strategy[T], args: tuple[Any, ...], kwargs: dict[str, Any], forced: bool
    ) -> T:
        try:
            result = s.run(*args, **kwargs)
        except StrategyUnsupported as exc:
            if (exc.feature, exc.strategy) != (self.id, s.name):
                # Another feature's forced strategy, refused inside this one: that is a failure
                # of this strategy, never a sign that the kernel lacks it.
                LOG.add(self.id, s.name, "failed", err=exc.errno, message=str(exc), forced=forced)
                raise
            # A limit the strategy itself knows (options too long for one page).
            self._unsupported(s, exc.errno, exc.message, forced, cache=False)
            raise
        except Unsupported as exc:
            self._unsupported(s, exc.errno, exc.message, forced, cache=False)
            raise StrategyUnsupported(self.id, s.name, exc.errno, exc.message) from exc
        except OSError as exc:
            if exc.errno in s.unsupported:
                message = _kernel_message(exc)
                self._unsupported(s, exc.errno, message, forced, cache=exc.errno in s.cache_on)
                raise StrategyUnsupported(self.id, s.name, exc.errno, message) from exc
            LOG.add(
                self.id,
                s.name,
                "failed",
                err=exc.errno,
                message=_kernel_message(exc),
                forced=forced,
            )
            raise
        except BaseException as exc:
            LOG.add(self.id, s.name, "failed", message=repr(exc), forced=forced)
            raise
        LOG.add(self.id, s.name, "used", forced=forced)
        return result

    def _unsupported(
        self, s: Strategy[T], err: int | None, message: str, forced: bool, cache: bool
    ) -> None:
        LOG.add(self.id, s.name, "unsupported", err=err, message=message, forced=forced)
        if cache:
            with self._lock:
                self._known_unsupported[s.name] = Attempt(s.name, err, message)


FEATURES: dict[str, Feature[Any]] = {}


def feature(id: str, summary: str, strategies: list[Strategy[T]]) -> Feature[T]:
    """Create and register a feature; its strategies are tried in the order given."""
    made = Feature(id, summary, strategies)
    FEATURES[id] = made
    return made


def reset_probes() -> None:
    """Forget every remembered "unsupported" answer (for tests)."""
    for f in FEATURES.values():
        f.reset()


def validate_forcing(choices: Mapping[str, str]) -> None:
    import mountcompat.features  # noqa: F401 -- registers every feature

    for feature_id, strategy_name in choices.items():
        if feature_id not in FEATURES:
            raise UnknownStrategy(f"no feature {feature_id!r} (known: {', '.join(FEATURES)})")
        FEATURES[feature_id].strategy(strategy_name)
