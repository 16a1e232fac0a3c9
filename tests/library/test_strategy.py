"""The order, forcing, caching and recording of strategies (the dispatcher's own logic)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from mountcompat import open_in_root
from mountcompat.choices import LOG, forced, parse_force
from mountcompat.errors import NoStrategyWorked, StrategyUnsupported, UnknownStrategy
from mountcompat.strategy import Feature, Strategy, Unsupported


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
    monkeypatch.setenv("MOUNTCOMPAT_FORCE", "path.resolve=userspace")
    with forced({"path.resolve": "openat2"}):
        os.close(open_in_root("/", "etc"))
    assert LOG.records("path.resolve")[-1].strategy == "openat2"
    os.close(open_in_root("/", "etc"))
    assert LOG.records("path.resolve")[-1].strategy == "userspace"
    assert all(r.forced for r in LOG.records("path.resolve"))


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
