"""Features and their strategies: try in order, remember what the kernel cannot do, record all.

A strategy is a small function with a docstring that says which kernels need it, the errno or
message that tells, and why it exists. Each errno a strategy can get is one of three kinds:

``unsupported``
    errnos that can only mean "not on this kernel" (ENOSYS above all): the next strategy is
    tried. Those also in ``cache_on`` hold for every request and are remembered for the rest
    of the process.
``ambiguous``
    errnos the kernel returns both when it lacks the feature and when the request is wrong
    (EINVAL: a bad workdir and an unknown parameter look alike). They are decided by
    :class:`Probe` s, throwaway requests known to be valid, asked once per process: a probe
    that finds its capability missing makes the refusal "unsupported" (remembered when it is
    the strategy's own ``probe``, since a request's ``request_probes`` only say something
    about requests like it); when every probe finds its capability present, the request
    itself is wrong and the kernel's own error is raised, recorded ``failed``.
anything else
    a real failure, raised as it is, never hidden by a fallback.

Every cached answer (remembered refusals, probe answers, and the caches any module registers
with :func:`register_cache`) is forgotten by :func:`reset_probes`.
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mountcompat import _syscalls as sys_
from mountcompat.choices import ENV_FORCE, LOG, forced_strategy, forget_environment_forcing
from mountcompat.errors import (
    Attempt,
    ForcingRefused,
    NoStrategyWorked,
    StrategyUnsupported,
    UnknownStrategy,
    errno_name,
)

T = TypeVar("T")


class Unsupported(Exception):
    """Raised by a strategy that found, without a failing syscall, that it cannot work here
    (a limit it knows, like a value longer than fsconfig copies)."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err
        self.message = message


# --- caches that reset_probes() forgets ---------------------------------------------------

_resettable: list[Callable[[], None]] = []
_resettable_lock = threading.Lock()


def register_cache(forget: Callable[[], None]) -> Callable[[], None]:
    """Have :func:`reset_probes` call ``forget``. Any module that caches what the kernel said
    (a ``functools.cache``'s ``cache_clear``, a learnt mask's ``clear``) registers it here, so
    that a test or a long-lived process can ask the kernel again. Returns ``forget``."""
    with _resettable_lock:
        if forget not in _resettable:
            _resettable.append(forget)
    return forget


# --- probes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One question to the kernel: does it have ``capability``?

    ``check`` asks it with a throwaway request known to be valid (a tmpfs context, an
    overlay of two empty directories on a private tmpfs, an ioctl with an invalid fd) and
    returns True (present) or False (missing). It must be cheap and leave nothing behind; an
    exception means it could not tell. The answer is cached per process under
    ``(capability, key)``: ``key`` tells apart questions of one capability about different
    requests (the mount attributes asked for, say)."""

    capability: str
    check: Callable[[], bool] = field(compare=False, repr=False)
    key: Hashable = ()

    def present(self) -> bool:
        return _ANSWERS.ask(self)


class _ProbeAnswers:
    def __init__(self) -> None:
        self._answers: dict[tuple[str, Hashable], bool] = {}
        self._lock = threading.Lock()

    def ask(self, probe: Probe) -> bool:
        slot = (probe.capability, probe.key)
        with self._lock:
            known = self._answers.get(slot)
        if known is not None:
            return known
        # Asked outside the lock: a probe may take a moment, and two threads asking at once
        # only cost a second throwaway request. Untraced: a probe is no part of the path of
        # the strategy that needed it.
        with sys_.untraced():
            answer = bool(probe.check())
        with self._lock:
            self._answers[slot] = answer
        return answer

    def forget(self) -> None:
        with self._lock:
            self._answers.clear()


_ANSWERS = _ProbeAnswers()
register_cache(_ANSWERS.forget)
register_cache(forget_environment_forcing)


# --- strategies and features -------------------------------------------------------------


@dataclass(frozen=True)
class Strategy(Generic[T]):
    name: str
    run: Callable[..., T]
    unsupported: frozenset[int] = frozenset()
    cache_on: frozenset[int] = frozenset()
    ambiguous: frozenset[int] = frozenset()
    # What the strategy needs on every request: missing means it never works here.
    probe: Probe | None = None
    # What this request needs beyond that (data-only layers, these attributes), from the
    # same arguments as ``run``: missing means not for requests like this one.
    request_probes: Callable[..., Sequence[Probe]] | None = None
    # Why the strategy is weaker than its feature's best where security is concerned (a
    # userspace walk open to rename races): the environment may not force it, code may, and
    # its records say so.
    weaker: str = ""

    def __post_init__(self) -> None:
        if self.ambiguous & self.unsupported:
            raise ValueError(f"{self.name}: an errno is either unsupported or ambiguous")
        if self.ambiguous and self.probe is None and self.request_probes is None:
            raise ValueError(f"{self.name}: ambiguous errnos need a probe to decide them")

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()

    def probes_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Probe]:
        probes = [self.probe] if self.probe is not None else []
        if self.request_probes is not None:
            probes.extend(self.request_probes(*args, **kwargs))
        return probes


def _kernel_message(exc: BaseException) -> str:
    messages = getattr(exc, "kernel_messages", None)
    return "; ".join(messages) if messages else str(exc)


@dataclass(frozen=True)
class _Refusal:
    """The verdict "not here": its message, and whether it holds for every request."""

    message: str
    remember: bool


def _decide_ambiguous(
    s: Strategy[Any], exc: OSError, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _Refusal | None:
    """Ask the strategy's probes about an ambiguous refusal: a missing capability makes it
    "not here"; if all are present the request is wrong, and ``exc`` gets a note saying so."""
    probes = s.probes_for(args, kwargs)
    if not probes:
        return None  # nothing of this request can be missing: the kernel refused it
    asked = []
    for probe in probes:
        try:
            present = probe.present()
        except Exception as failure:  # the probe could not tell: the kernel's error stands
            exc.add_note(f"{s.name}: probing {probe.capability} failed ({failure!r})")
            return None
        if not present:
            message = f"{probe.capability} missing (probed): {_kernel_message(exc)}"
            return _Refusal(message, remember=probe is s.probe)
        asked.append(probe.capability)
    exc.add_note(
        f"{s.name}: {errno_name(exc.errno)} is not a missing feature here (probed present: "
        f"{', '.join(asked)}); the kernel refused this request"
    )
    return None


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
        if not sys_.tracing():
            return self._run(s, args, kwargs, forced, None)
        with sys_.traced() as calls:
            return self._run(s, args, kwargs, forced, _Path(calls, request_of(s.run, args, kwargs)))

    def _run(
        self,
        s: Strategy[T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        forced: bool,
        path: _Path | None,
    ) -> T:
        """One attempt, recorded; ``path`` (with tracing on) holds the calls noted so far, so
        that the record written here carries every call of the attempt."""
        try:
            result = s.run(*args, **kwargs)
        except StrategyUnsupported as exc:
            if (exc.feature, exc.strategy) != (self.id, s.name):
                # Another feature's forced strategy, refused inside this one: that is a failure
                # of this strategy, never a sign that the kernel lacks it.
                LOG.add(
                    self.id,
                    s.name,
                    "failed",
                    err=exc.errno,
                    message=str(exc),
                    forced=forced,
                    **_traced(path),
                )
                raise
            # A limit the strategy itself knows (options too long for one page).
            self._unsupported(s, exc.errno, exc.message, forced, remember=False, path=path)
            raise
        except Unsupported as exc:
            self._unsupported(s, exc.errno, exc.message, forced, remember=False, path=path)
            raise StrategyUnsupported(self.id, s.name, exc.errno, exc.message) from exc
        except OSError as exc:
            refusal = self._refusal(s, exc, args, kwargs)
            if refusal is not None:
                self._unsupported(s, exc.errno, refusal.message, forced, refusal.remember, path)
                raise StrategyUnsupported(
                    self.id, s.name, exc.errno, refusal.message, missing=refusal.remember
                ) from exc
            message = "; ".join([_kernel_message(exc), *getattr(exc, "__notes__", [])])
            LOG.add(
                self.id,
                s.name,
                "failed",
                err=exc.errno,
                message=message,
                forced=forced,
                **_traced(path),
            )
            raise
        except BaseException as exc:
            LOG.add(self.id, s.name, "failed", message=repr(exc), forced=forced, **_traced(path))
            raise
        note = f"forced although weaker: {s.weaker}" if forced and s.weaker else ""
        LOG.add(self.id, s.name, "used", forced=forced, message=note, **_traced(path))
        return result

    @staticmethod
    def _refusal(
        s: Strategy[T], exc: OSError, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Refusal | None:
        absent = _absent_filesystem(exc)
        if absent is not None:
            return _Refusal(absent, remember=False)
        if exc.errno in s.unsupported:
            return _Refusal(_kernel_message(exc), remember=exc.errno in s.cache_on)
        if exc.errno in s.ambiguous:
            return _decide_ambiguous(s, exc, args, kwargs)
        return None

    def _unsupported(
        self,
        s: Strategy[T],
        err: int | None,
        message: str,
        forced: bool,
        remember: bool,
        path: _Path | None = None,
    ) -> None:
        LOG.add(
            self.id,
            s.name,
            "unsupported",
            err=err,
            message=message,
            forced=forced,
            **_traced(path),
        )
        if remember:
            with self._lock:
                self._known_unsupported[s.name] = Attempt(s.name, err, message)


def _absent_filesystem(exc: OSError) -> str | None:
    """ENODEV from fsopen or mount(2) is the kernel saying it has no such filesystem type
    (after trying to load its module): every strategy of every feature is then "not here" for
    that type, never broken. /proc/filesystems decides, as the kernel's own list."""
    operation = getattr(exc, "operation", None)
    arguments: tuple[Any, ...] = getattr(exc, "arguments", ())
    position = {"fsopen": 0, "mount": 2}.get(str(operation))  # where the type is named
    if exc.errno != errno.ENODEV or position is None or len(arguments) <= position:
        return None
    fstype = arguments[position]
    if not isinstance(fstype, str) or fstype in known_filesystems():
        return None  # the type is there: ENODEV means something else (a missing device)
    return f"filesystem type absent: this kernel has no {fstype} (/proc/filesystems)"


def known_filesystems() -> set[str]:
    try:
        with open("/proc/filesystems") as listed:
            return {line.split()[-1] for line in listed if line.strip()}
    except OSError:
        return set()


@dataclass(frozen=True)
class _Path:
    """What an attempt's record says of its path: the calls so far (a live frame), and the
    request they answer."""

    calls: list[dict[str, Any]]
    request: dict[str, Any]


def _traced(path: _Path | None) -> dict[str, Any]:
    """The record's fields for the path so far (none with tracing off)."""
    if path is None:
        return {}
    return {"calls": tuple(dict(c) for c in path.calls), "request": path.request}


_signatures: dict[Callable[..., Any], inspect.Signature] = {}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)  # a flag enum as its number
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple | list):
        return len(value)  # of layers, say: what a path's number of calls depends on
    return None


def request_of(
    run: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """A strategy's arguments by name, the plain ones only (flags, booleans, paths, counts);
    a dataclass argument (a loop request, an overlay spec) by its fields, as ``name.field``."""
    signature = _signatures.get(run)
    if signature is None:
        signature = _signatures[run] = inspect.signature(run)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return {}
    request: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                request[f"{name}.{f.name}"] = _plain(getattr(value, f.name))
        else:
            request[name] = _plain(value)
    return request


FEATURES: dict[str, Feature[Any]] = {}


def feature(id: str, summary: str, strategies: list[Strategy[T]]) -> Feature[T]:
    """Create and register a feature; its strategies are tried in the order given."""
    made = Feature(id, summary, strategies)
    FEATURES[id] = made
    return made


def reset_probes() -> None:
    """Forget every cached answer of the kernel: remembered refusals, probe answers and every
    cache registered with :func:`register_cache` (for tests, and long-lived processes)."""
    for f in FEATURES.values():
        f.reset()
    with _resettable_lock:
        forgetters = list(_resettable)
    for forget in forgetters:
        forget()


def validate_forcing(choices: Mapping[str, str], from_environment: bool = False) -> None:
    """Every feature and strategy named must exist; the environment (MOUNTCOMPAT_FORCE) may not
    force a strategy that is weaker where security is concerned: anybody who sets a variable
    would switch the program onto it. Code may, with :func:`~mountcompat.choices.forced`."""
    import mountcompat.features  # noqa: F401 -- registers every feature

    for feature_id, strategy_name in choices.items():
        if feature_id not in FEATURES:
            raise UnknownStrategy(f"no feature {feature_id!r} (known: {', '.join(FEATURES)})")
        chosen = FEATURES[feature_id].strategy(strategy_name)
        if from_environment and chosen.weaker:
            raise ForcingRefused(
                f"{ENV_FORCE}: {feature_id}={strategy_name} is refused: {chosen.weaker}; "
                "force it in code (mountcompat.choices.forced) if it is really wanted"
            )
