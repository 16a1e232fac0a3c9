"""The expectations file: per (feature, strategy), the conditions under which it should work."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

CONDITION_KEYS = {"symbol", "config", "min_release", "tags_any", "tags_none"}


@dataclass(frozen=True)
class KernelFacts:
    """What is known of a kernel without asking the library under test."""

    release: str | None
    tags: tuple[str, ...] = ()
    symbols: frozenset[str] | None = None  # None: the guest never reported them
    config: Mapping[str, str] = field(default_factory=dict)


def release_tuple(release: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not match:
        return (0,)
    return tuple(int(g) for g in match.groups() if g is not None)


def parse_config(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            values[key] = value
    return values


def _holds(condition: Mapping[str, Any], facts: KernelFacts) -> tuple[bool, list[str]]:
    reasons = []
    ok = True
    if "symbol" in condition:
        name = str(condition["symbol"])
        if facts.symbols is None:
            raise LookupError("the guest reported no kernel symbols (facts.json)")
        arm = name.replace("__x64_sys_", "__arm64_sys_")
        have = name in facts.symbols or arm in facts.symbols
        ok &= have
        reasons.append(f"symbol {name} {'present' if have else 'absent'}")
    if "config" in condition:
        value = facts.config.get(str(condition["config"]))
        have = value in ("y", "m")
        ok &= have
        reasons.append(f"{condition['config']}={value or 'unset'}")
    if "min_release" in condition:
        have = facts.release is not None and release_tuple(facts.release) >= release_tuple(
            str(condition["min_release"])
        )
        ok &= have
        reasons.append(
            f"release {facts.release} {'>=' if have else '<'} {condition['min_release']}"
        )
    if "tags_any" in condition:
        have = bool(set(condition["tags_any"]) & set(facts.tags))
        ok &= have
        reasons.append(f"tags {'include' if have else 'lack'} any of {condition['tags_any']}")
    if "tags_none" in condition:
        have = not set(condition["tags_none"]) & set(facts.tags)
        ok &= have
        reasons.append(f"tags {'avoid' if have else 'include'} {condition['tags_none']}")
    return ok, reasons


@dataclass(frozen=True)
class Expectations:
    path: Path
    conditions: Mapping[str, Mapping[str, Mapping[str, Any]]]

    def expected(self, feature: str, strategy: str, facts: KernelFacts) -> tuple[str, str]:
        """("works" or "unsupported" or "unknown", why)."""
        condition = self.conditions.get(feature, {}).get(strategy)
        if condition is None:
            return "unknown", f"no expectation for {feature}/{strategy} in {self.path.name}"
        if facts.release is None:
            return "unknown", "the kernel never reported its release"
        try:
            ok, reasons = _holds(condition, facts)
        except LookupError as exc:
            return "unknown", str(exc)
        return ("works" if ok else "unsupported"), "; ".join(reasons) or "always"


def load_expectations(path: Path) -> Expectations:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), None, None, "expected a mapping of features")
    for feature, strategies in data.items():
        if not isinstance(strategies, dict):
            raise ConfigError(str(path), None, str(feature), "expected a mapping of strategies")
        for strategy, condition in strategies.items():
            if not isinstance(condition, dict) or set(condition) - CONDITION_KEYS:
                raise ConfigError(
                    str(path),
                    None,
                    f"{feature}.{strategy}",
                    f"conditions are a mapping of {sorted(CONDITION_KEYS)}",
                )
    return Expectations(path, data)
