"""The order, forcing, caching and recording of strategies (the dispatcher's own logic)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountcompat import list_mounts, mount_fs, open_in_root
from mountcompat.choices import LOG, ChoiceLog, forced, parse_force
from mountcompat.errors import (
    ForcingRefused,
    NoStrategyWorked,
    StrategyUnsupported,
    UnknownStrategy,
)
from mountcompat.strategy import (
    Feature,
    Probe,
    Strategy,
    Unsupported,
    register_cache,
    reset_probes,
)


def refuse(err: int) -> object:
    raise OSError(err, "refused")


def make_feature(first_errno: int | None) -> Feature[str]:
    def first() -> str:
        """first"""
        if first_errno is not None:
            raise OSError(first_errno, "nope")
        return "first"

    def second() -> str:
        return "second"

    return Feature(
        "test.feature",
        "a test feature",
        [
            Strategy(
                "first",
                first,
                unsupported=frozenset({errno.ENOSYS, errno.EINVAL}),
                cache_on=frozenset({errno.ENOSYS}),
            ),
            Strategy("second", second),
        ],
    )


@pytest.fixture(autouse=True)
def clean_log() -> Iterator[None]:
    LOG.reset()
    yield
    LOG.reset()


def outcomes() -> list[tuple[str, str]]:
    return [(r.strategy, r.outcome) for r in LOG.records("test.feature")]


def test_first_that_works_is_used_and_recorded() -> None:
    assert make_feature(None)() == "first"
    assert outcomes() == [("first", "used")]


def test_unsupported_falls_back_and_enosys_is_remembered() -> None:
    feature = make_feature(errno.ENOSYS)
    assert feature() == "second"
    assert feature() == "second"
    assert outcomes() == [
        ("first", "unsupported"),
        ("second", "used"),
        ("first", "skipped"),
        ("second", "used"),
    ]
    feature.reset()
    feature()
    assert outcomes()[-2] == ("first", "unsupported")


def test_einval_is_not_remembered() -> None:
    feature = make_feature(errno.EINVAL)
    feature()
    feature()
    assert [o for s, o in outcomes() if s == "first"] == ["unsupported", "unsupported"]


def test_a_real_error_is_raised_not_hidden() -> None:
    with pytest.raises(FileNotFoundError):
        make_feature(errno.ENOENT)()
    assert outcomes() == [("first", "failed")]


def test_forcing_an_unsupported_strategy_names_it() -> None:
    with pytest.raises(StrategyUnsupported) as caught:
        make_feature(errno.ENOSYS)(force="first")
    assert (caught.value.feature, caught.value.strategy) == ("test.feature", "first")
    assert caught.value.errno == errno.ENOSYS
    assert LOG.records()[-1].forced


def test_nothing_works() -> None:
    feature = Feature(
        "test.feature",
        "",
        [
            Strategy("a", lambda: refuse(errno.ENOSYS), unsupported=frozenset({errno.ENOSYS})),
            Strategy("b", lambda: (_ for _ in ()).throw(Unsupported(errno.ENOTBLK, "no"))),
        ],
    )
    with pytest.raises(NoStrategyWorked) as caught:
        feature()
    assert [a.strategy for a in caught.value.attempts] == ["a", "b"]
    assert "ENOTBLK" in str(caught.value)


def test_parse_force() -> None:
    assert parse_force("overlay.layers=lowerdir-string, mount.attr=remount") == {
        "overlay.layers": "lowerdir-string",
        "mount.attr": "remount",
    }
    with pytest.raises(UnknownStrategy):
        parse_force("overlay.layers")


def test_caller_forcing_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOUNTCOMPAT_FORCE", "mounts.list=mountinfo")
    with forced({"mounts.list": "statmount"}):
        list_mounts()
    assert LOG.records("mounts.list")[-1].strategy == "statmount"
    list_mounts()
    assert LOG.records("mounts.list")[-1].strategy == "mountinfo"
    assert all(r.forced for r in LOG.records("mounts.list"))


def test_the_environment_may_not_force_a_weaker_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anybody who can set a variable would switch a program onto the racy userspace walk;
    code may still force it, and the record says it was weaker."""
    monkeypatch.setenv("MOUNTCOMPAT_FORCE", "path.resolve=userspace")
    with pytest.raises(ForcingRefused, match=r"path\.resolve=userspace is refused"):
        open_in_root("/", "etc")
    monkeypatch.delenv("MOUNTCOMPAT_FORCE")
    reset_probes()
    with forced({"path.resolve": "userspace"}):
        os.close(open_in_root("/", "etc"))
    (record,) = [r for r in LOG.records("path.resolve") if r.outcome == "used"]
    assert record.forced and record.message.startswith("forced although weaker: ")


def test_one_feature_forced_two_ways_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOUNTCOMPAT_FORCE", "mount.api=mount2,mount.api=fsmount")
    with pytest.raises(ForcingRefused, match="both mount2 and fsmount"):
        list_mounts()


def test_forcing_unknown_names_fails_at_once() -> None:
    with pytest.raises(UnknownStrategy), forced({"path.resolve": "nonsense"}):
        pass
    with pytest.raises(UnknownStrategy), forced({"no.such": "feature"}):
        pass


def test_another_features_refusal_is_a_failure_not_unsupported() -> None:
    """A strategy that fails because a nested, forced feature is refused must not be
    recorded as "unsupported" (nor fall through to the next strategy)."""

    def nested() -> str:
        raise StrategyUnsupported("other.feature", "forced-one", errno.EOPNOTSUPP, "nope")

    feature = Feature(
        "test.feature",
        "",
        [
            Strategy("first", nested, unsupported=frozenset({errno.EOPNOTSUPP})),
            Strategy("second", lambda: "second"),
        ],
    )
    with pytest.raises(StrategyUnsupported) as caught:
        feature()
    assert caught.value.feature == "other.feature"
    assert outcomes() == [("first", "failed")]


def test_a_misspelt_feature_in_the_environment_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOUNTCOMPAT_FORCE", "path.resolv=userspace")
    with pytest.raises(UnknownStrategy):
        open_in_root("/", "etc")


# --- ambiguous errnos and probes ---------------------------------------------------------


class Kernel:
    """A probe double: what a throwaway request would find, and how often it was asked."""

    def __init__(self, has: bool) -> None:
        self.has, self.asked = has, 0

    def check(self) -> bool:
        self.asked += 1
        return self.has


def ambiguous_feature(
    base: Probe | None, per_request: list[Probe] | None = None, err: int = errno.EINVAL
) -> Feature[str]:
    def first(request: str) -> str:
        """first: refuses every request with an ambiguous errno"""
        raise OSError(err, f"refused {request}")

    return Feature(
        "test.feature",
        "",
        [
            Strategy(
                "first",
                first,
                ambiguous=frozenset({err}),
                probe=base,
                request_probes=(lambda request: per_request or []),
            ),
            Strategy("second", lambda request: f"second {request}"),
        ],
    )


def test_ambiguous_errno_with_the_capability_missing_falls_back_and_is_remembered() -> None:
    kernel = Kernel(has=False)
    feature = ambiguous_feature(Probe("the thing (test)", kernel.check, key="missing"))
    assert feature("a") == "second a"
    assert feature("b") == "second b"
    assert outcomes() == [
        ("first", "unsupported"),
        ("second", "used"),
        ("first", "skipped"),
        ("second", "used"),
    ]
    assert kernel.asked == 1
    assert "the thing (test) missing (probed)" in LOG.records("test.feature")[0].message


def test_ambiguous_errno_with_the_capability_present_is_the_requests_fault() -> None:
    kernel = Kernel(has=True)
    feature = ambiguous_feature(Probe("the thing (test)", kernel.check, key="present"))
    with pytest.raises(OSError) as caught:
        feature("wrong")
    assert caught.value.errno == errno.EINVAL
    assert str(caught.value) == "[Errno 22] refused wrong"  # the kernel's own error
    assert any("probed present: the thing (test)" in n for n in caught.value.__notes__)
    assert outcomes() == [("first", "failed")]  # "second" never tried
    with pytest.raises(OSError):
        feature("wrong again")
    assert kernel.asked == 1  # the answer is cached per process


def test_a_request_probe_missing_is_not_remembered_for_the_strategy() -> None:
    base, data = Kernel(has=True), Kernel(has=False)
    feature = ambiguous_feature(
        Probe("layers (test)", base.check, key="r1"),
        [Probe("data layers (test)", data.check, key="r1")],
    )
    assert feature("with data") == "second with data"
    assert feature("with data") == "second with data"
    # Tried again each time (another request may not need data layers), probes asked once.
    assert [o for s, o in outcomes() if s == "first"] == ["unsupported", "unsupported"]
    assert (base.asked, data.asked) == (1, 1)


def test_a_probe_that_cannot_tell_leaves_the_kernels_error_standing() -> None:
    def broken() -> bool:
        raise PermissionError(errno.EPERM, "no right to mount the throwaway")

    feature = ambiguous_feature(Probe("the thing (test)", broken, key="broken"))
    with pytest.raises(OSError) as caught:
        feature("x")
    assert caught.value.errno == errno.EINVAL
    assert any("probing the thing (test) failed" in n for n in caught.value.__notes__)
    assert outcomes() == [("first", "failed")]


def test_forced_strategy_with_the_capability_missing_is_unsupported() -> None:
    feature = ambiguous_feature(Probe("the thing (test)", Kernel(False).check, key="forced"))
    with pytest.raises(StrategyUnsupported) as caught:
        feature("x", force="first")
    assert caught.value.errno == errno.EINVAL


def test_reset_probes_forgets_probe_answers_and_registered_caches() -> None:
    kernel = Kernel(has=False)
    probe = Probe("the thing (test)", kernel.check, key="reset")
    forgotten: list[str] = []
    register_cache(lambda: forgotten.append("mine"))
    assert probe.present() is False
    kernel.has = True
    assert probe.present() is False  # cached
    reset_probes()
    assert probe.present() is True
    assert kernel.asked == 2
    assert forgotten == ["mine"]


def test_a_strategy_cannot_declare_ambiguity_without_a_probe() -> None:
    with pytest.raises(ValueError, match="need a probe"):
        Strategy("x", lambda: None, ambiguous=frozenset({errno.EINVAL}))
    with pytest.raises(ValueError, match="either unsupported or ambiguous"):
        Strategy(
            "x",
            lambda: None,
            unsupported=frozenset({errno.EINVAL}),
            ambiguous=frozenset({errno.EINVAL}),
            probe=Probe("p", lambda: True),
        )


# --- the choice log stays bounded --------------------------------------------------------


def test_choice_log_keeps_the_last_records_and_marks_still_work() -> None:
    log = ChoiceLog(capacity=3)
    first = log.mark()
    for i in range(5):
        log.add("f", f"s{i}", "used")
    assert [r.strategy for r in log.records()] == ["s2", "s3", "s4"]
    assert log.dropped == 2
    assert [r.strategy for r in log.since(first)] == ["s2", "s3", "s4"]  # what is left
    middle = log.mark()
    log.add("f", "s5", "used")
    assert [r.strategy for r in log.since(middle)] == ["s5"]
    log.reset()
    log.add("f", "s6", "used")
    assert [r.strategy for r in log.since(middle)] == ["s6"]  # a mark survives a reset
    assert log.since(log.mark()) == []


def test_the_process_log_is_bounded() -> None:
    before = LOG.mark()
    for _ in range(LOG.capacity + 10):
        LOG.add("test.feature", "x", "used")
    assert len(LOG.records()) == LOG.capacity
    assert len(LOG.since(before)) == LOG.capacity


@pytest.mark.parametrize("strategy", ["fsmount", "mount2"])
def test_a_filesystem_type_the_kernel_lacks_is_unsupported(tmp_path: Path, strategy: str) -> None:
    """ENODEV, the kernel's own answer for a type it has not (not in /proc/filesystems, no
    module to load): the cell says "filesystem type absent", unsupported, never broken."""
    with pytest.raises(StrategyUnsupported) as caught:
        mount_fs("mountcompat-nosuchfs", None, tmp_path, force=strategy)
    assert caught.value.errno == errno.ENODEV
    assert "filesystem type absent: this kernel has no mountcompat-nosuchfs" in str(caught.value)
    with pytest.raises(NoStrategyWorked) as everything:
        mount_fs("mountcompat-nosuchfs", None, tmp_path)
    assert all("filesystem type absent" in a.message for a in everything.value.attempts)
