"""What defines each strategy's path, and the judging of a traced attempt against it.

A strategy's path is told by its *marks*: the calls that only it makes among the strategies
of its feature (fsconfig ``FSCONFIG_SET_FD lowerdir+`` with an O_PATH fd; mount(2) of type
overlay; LOOP_CONFIGURE). Its *needs* are further calls its request demands (AT_RECURSIVE
on mount_setattr when the request is recursive, LO_FLAGS_DIRECT_IO asked when direct I/O
is). An attempt follows the path when every mark and every need that applies was seen,
and no mark of another strategy of the feature was: a library that quietly took another
road under this strategy's name, or dropped a defining flag, does not.

The calls are those the library's raw layer noted during the forced call itself
(``mountcompat._syscalls.traced``): probes and the library's own helpers are untraced. The
table of paths belongs to the suites (``suites/paths.py``), never to the library judged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Whether the kernel's own trace shows a call the library noted (kernel_trace.confirms, bound
# to one test's trace); None where the kernel offers no witness.
Confirm = Callable[[Mapping[str, Any]], bool]

ANY = "*"  # a field that must be present, whatever its value


@dataclass(frozen=True)
class Call:
    """A pattern of one noted call. ``flags`` must all be set in the call's ``flags_field``,
    ``without`` none of them; ``ok``: the call must have succeeded (False: attempted at all,
    as a flag the kernel may refuse and the strategy then does without). ``when`` names a
    request field that must be true for the pattern to be needed (``!field``: false)."""

    call: str
    cmd: str | tuple[str, ...] | None = None
    key: str | None = None
    fd: str | None = None  # "O_PATH", or "!O_PATH" for an fd opened any other way
    fstype: str | None = None
    source: str | None = None
    path: str | None = None  # the file read ends with this
    flags: int = 0
    without: int = 0
    flags_field: str = "flags"
    ok: bool = True
    when: str | None = None
    shown: str = ""  # how the evidence names it; made from the fields if empty

    def applies(self, request: Mapping[str, Any] | None) -> bool:
        if self.when is None:
            return True
        name = self.when.lstrip("!")
        value = bool((request or {}).get(name))
        return not value if self.when.startswith("!") else value

    def matches(self, noted: Mapping[str, Any], attempted: bool = False) -> bool:
        if noted.get("call") != self.call:
            return False
        if self.ok and not attempted and noted.get("errno"):
            return False
        for name in ("key", "fstype", "source"):
            wanted = getattr(self, name)
            if wanted is not None and not _value_matches(noted.get(name), wanted):
                return False
        if self.cmd is not None:
            cmds = (self.cmd,) if isinstance(self.cmd, str) else self.cmd
            if noted.get("cmd") not in cmds:
                return False
        if self.fd is not None:
            is_opath = noted.get("fd") == "O_PATH"
            if is_opath != (self.fd == "O_PATH"):
                return False
        if self.path is not None and not str(noted.get("path", "")).endswith(self.path):
            return False
        value = int(noted.get(self.flags_field) or 0)
        return value & self.flags == self.flags and not value & self.without

    def describe(self) -> str:
        if self.shown:
            return self.shown
        words = [self.call if self.call != "mount" else "mount(2)"]
        if self.cmd is not None:
            words.append(self.cmd if isinstance(self.cmd, str) else "|".join(self.cmd))
        words += [w for w in (self.key, self.fstype) if w and w != ANY]
        if self.fd:
            words.append(f"fd {self.fd.replace('!', 'not ')}")
        if self.source:
            words.append(f"source a {self.source}")
        if self.path:
            words.append(self.path)
        if self.flags:
            words.append(flag_names(self.call, self.flags))
        if self.without:
            words.append("without " + flag_names(self.call, self.without))
        return " ".join(words)


_AT = {0x1000: "AT_EMPTY_PATH", 0x8000: "AT_RECURSIVE"}
FLAG_NAMES: dict[str, dict[int, str]] = {
    "open_tree": {0x1: "OPEN_TREE_CLONE", **_AT},
    "open_tree_attr": {0x1: "OPEN_TREE_CLONE", **_AT},
    "mount_setattr": _AT,
    "move_mount": {0x4: "MOVE_MOUNT_F_EMPTY_PATH"},
    "mount": {0x1000: "MS_BIND", 0x20: "MS_REMOUNT"},
    "umount2": {0x2: "MNT_DETACH"},
}


def flag_names(call: str, flags: int) -> str:
    """``AT_EMPTY_PATH|OPEN_TREE_CLONE`` for the bits of ``flags`` named for ``call``."""
    known = FLAG_NAMES.get(call, {})
    names = [name for bit, name in sorted(known.items()) if flags & bit]
    rest = flags & ~sum(bit for bit in known if flags & bit)
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names)


def _value_matches(value: Any, wanted: str) -> bool:
    return value is not None if wanted == ANY else value == wanted


@dataclass(frozen=True)
class StrategyPath:
    marks: tuple[Call, ...]
    needs: tuple[Call, ...] = ()


@dataclass(frozen=True)
class PathVerdict:
    """The judging of one attempt: ``problems`` empty when it followed its path."""

    seen: list[str]
    problems: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)  # other strategies' marks, not seen

    def summary(self) -> str:
        text = "; ".join(self.seen) or "no call"
        if self.absent:
            text += "; no " + ", no ".join(self.absent)
        return text


Paths = Mapping[str, Mapping[str, StrategyPath]]


def _count(calls: Sequence[Mapping[str, Any]], pattern: Call, attempted: bool = False) -> int:
    return sum(int(c.get("n", 1)) for c in calls if pattern.matches(c, attempted))


def judge_path(
    paths: Paths,
    feature: str,
    strategy: str,
    calls: Sequence[Mapping[str, Any]],
    request: Mapping[str, Any] | None,
    confirm: Confirm | None = None,
) -> PathVerdict:
    """Whether an attempt's calls follow ``strategy``'s path, and what was seen of it. With
    ``confirm``, each call that shows a mark or a need must be in the kernel's trace too."""
    table = paths.get(feature, {})
    own = table.get(strategy)
    if own is None:
        return PathVerdict([], [f"the suites name no path for {feature}/{strategy}"])
    seen, problems = [], []
    for pattern in (*own.marks, *own.needs):
        if not pattern.applies(request):
            continue
        count = _count(calls, pattern)
        if not count:
            problems.append(f"not seen: {pattern.describe()}")
            continue
        seen.append(pattern.describe() + (f" x{count}" if count > 1 else ""))
        matching = [c for c in calls if pattern.matches(c)]
        if confirm is not None and not any(confirm(c) for c in matching):
            problems.append(f"the kernel's trace does not show: {pattern.describe()}")
    absent = []
    for other, path in table.items():
        if other == strategy:
            continue
        for mark in path.marks:
            if _count(calls, mark, attempted=True):
                problems.append(f"seen: {mark.describe()}, which is {other}'s path")
            else:
                absent.append(mark.describe())
    return PathVerdict(seen, problems, sorted(set(absent)))


def path_of_records(
    paths: Paths,
    records: Iterable[Mapping[str, Any]],
    feature: str,
    strategy: str,
    confirm: Confirm | None = None,
) -> tuple[str, list[str]]:
    """Over a test's ``used`` records of one cell: the evidence of the path (the first
    attempt's summary) and every problem found in any of them."""
    summary = ""
    problems: list[str] = []
    for record in records:
        if (record.get("feature"), record.get("strategy"), record.get("outcome")) != (
            feature,
            strategy,
            "used",
        ):
            continue
        verdict = judge_path(
            paths, feature, strategy, record.get("calls") or (), record.get("request"), confirm
        )
        summary = summary or verdict.summary()
        problems.extend(p for p in verdict.problems if p not in problems)
    return summary, problems
