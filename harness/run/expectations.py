"""The expectations file: per (feature, strategy), the conditions under which it should work.

Conditions come from the kernel under test, found apart from the library they judge:

``symbol``       a symbol in the guest's /proc/kallsyms; a string (``__x64_sys_fsopen``, read
                 as ``__arm64_sys_fsopen`` on arm64) or a mapping per architecture
``config``       an option =y or =m in the kernel's own config file
``min_release``  the kernel's upstream release is at least this: from its package version
                 (Debian's 6.1.0-50 is 6.1.153), else from ``uname -r``. For behaviour that
                 leaves no symbol or option behind; ``why`` must say so
``backports``    releases of older stable series that have it too (``6.6.23``): a kernel of
                 that series holds the condition from that release on
``image_string``  text in the kernel's image (a message the feature logs); looked for on the
                 host in the fetched vmlinuz (harness/fetch/imagefacts.py)
``module_string``  {module, string}: text in a module (a parameter name its parser matches),
                 or in the image where the module is built in
``tags_any``, ``tags_none``   tags from kernels.yaml

A kernel tagged ``backported`` (RHEL's 5.14, which carries years of later work) decides no
``min_release``: its version says nothing of what it carries, so such a cell's expectation
is unknown, never guessed; its symbols, config and strings decide the rest.
``why``          a sentence: why this condition, and why no symbol or option can tell
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.config import UniqueKeyLoader, yaml_problem
from harness.errors import ConfigError

CONDITION_KEYS = {
    "symbol",
    "image_string",
    "module_string",
    "config",
    "min_release",
    "backports",
    "tags_any",
    "tags_none",
    "why",
}
SYMBOL_PREFIX = {"x86_64": "__x64_sys_", "arm64": "__arm64_sys_"}
BACKPORTED = "backported"


@dataclass(frozen=True)
class KernelFacts:
    """What is known of a kernel without asking the library under test."""

    release: str | None
    upstream: str | None = None  # from the package version, where there is a package
    arch: str = "x86_64"
    tags: tuple[str, ...] = ()
    symbols: frozenset[str] | None = None  # None: the guest never reported them
    config: Mapping[str, str] | None = field(default_factory=dict)  # None: no config file
    strings: Mapping[str, Any] | None = None  # strings.json; None: never looked for

    @property
    def version(self) -> str | None:
        return self.upstream or self.release


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


def symbol_for(condition: Any, arch: str) -> str:
    if isinstance(condition, Mapping):
        if arch not in condition:
            raise LookupError(f"no symbol given for {arch}")
        return str(condition[arch])
    name = str(condition)
    for prefix in SYMBOL_PREFIX.values():
        if name.startswith(prefix):
            return SYMBOL_PREFIX.get(arch, prefix) + name[len(prefix) :]
    return name


def _strings_asked(condition: Mapping[str, Any]) -> list[tuple[str, str]]:
    asked = []
    if "image_string" in condition:
        asked.append(("image", str(condition["image_string"])))
    if "module_string" in condition:
        module = condition["module_string"]
        asked.append((str(module["module"]), str(module["string"])))
    return asked


def release_holds(version: str, minimum: str, backports: list[str]) -> bool:
    have = release_tuple(version)
    for backport in backports:
        wanted = release_tuple(backport)
        if have[:2] == wanted[:2]:
            return have >= wanted
    return have >= release_tuple(minimum)


def _holds(condition: Mapping[str, Any], facts: KernelFacts) -> tuple[bool, list[str]]:
    reasons = []
    ok = True
    if "symbol" in condition:
        name = symbol_for(condition["symbol"], facts.arch)
        if facts.symbols is None:
            raise LookupError("the guest reported no kernel symbols (facts.json)")
        have = name in facts.symbols
        ok &= have
        reasons.append(f"symbol {name} {'present' if have else 'absent'}")
    for where, string in _strings_asked(condition):
        found = (facts.strings or {}).get(where)
        if not isinstance(found, Mapping) or string not in found:
            errors = "; ".join((facts.strings or {}).get("errors") or []) or "not looked for"
            raise LookupError(f"no answer for {string!r} in the {where} ({errors})")
        have = bool(found[string])
        ok &= have
        reasons.append(f"{string!r} {'in' if have else 'not in'} the {where}")
    if "config" in condition:
        if facts.config is None:
            raise LookupError(f"no config file to read {condition['config']} from")
        value = facts.config.get(str(condition["config"]))
        have = value in ("y", "m")
        ok &= have
        reasons.append(f"{condition['config']}={value or 'unset'}")
    undecided = None
    if "min_release" in condition and BACKPORTED in facts.tags:
        # Decided by the other conditions when one of them fails; unknown when they all hold.
        undecided = (
            f"needs {condition['min_release']} or later, and a {BACKPORTED} kernel's version "
            f"({facts.version}) cannot tell: {' '.join(str(condition.get('why')).split())}"
        )
    elif "min_release" in condition:
        version = facts.version
        backports = [str(b) for b in condition.get("backports", [])]
        have = version is not None and release_holds(
            version, str(condition["min_release"]), backports
        )
        ok &= have
        since = " or ".join([*backports, str(condition["min_release"])])
        source = "package" if facts.upstream else "release"
        reasons.append(f"{source} {version} {'is at least' if have else 'is before'} {since}")
    if "tags_any" in condition:
        have = bool(set(condition["tags_any"]) & set(facts.tags))
        ok &= have
        reasons.append(f"tags {'include' if have else 'lack'} any of {condition['tags_any']}")
    if "tags_none" in condition:
        have = not set(condition["tags_none"]) & set(facts.tags)
        ok &= have
        reasons.append(f"tags {'avoid' if have else 'include'} {condition['tags_none']}")
    if ok and undecided:
        raise LookupError(undecided)
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

    def preference(self, feature: str) -> list[str]:
        """The feature's strategies in this file's order, which is the order of preference:
        best first, written here apart from the library's own registry."""
        return [str(s) for s in self.conditions.get(feature, {})]

    def pairs(self) -> set[tuple[str, str]]:
        return {(f, s) for f, strategies in self.conditions.items() for s in strategies}


def _check_condition(path: Path, where: str, condition: object) -> None:
    if not isinstance(condition, dict) or set(condition) - CONDITION_KEYS:
        raise ConfigError(
            str(path), None, where, f"conditions are a mapping of {sorted(CONDITION_KEYS)}"
        )
    if "min_release" in condition and not condition.get("why"):
        raise ConfigError(
            str(path), None, where, "min_release needs a why: what leaves no symbol or option"
        )
    if "backports" in condition and "min_release" not in condition:
        raise ConfigError(str(path), None, where, "backports go with a min_release")
    from harness.fetch.imagefacts import KNOWN

    module = condition.get("module_string")
    if module is not None and (not isinstance(module, dict) or set(module) != {"module", "string"}):
        raise ConfigError(str(path), None, where, "module_string is {module: ..., string: ...}")
    try:
        asked = _strings_asked(condition)
    except (TypeError, KeyError) as exc:
        raise ConfigError(str(path), None, where, f"bad string condition: {exc}") from exc
    for place, string in asked:
        if string not in KNOWN.get(place, ()):
            raise ConfigError(
                str(path),
                None,
                where,
                f"{string!r} in the {place} is not looked for (harness/fetch/imagefacts.py KNOWN)",
            )


def load_expectations(path: Path) -> Expectations:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc}") from exc
    try:
        # A strategy given twice would keep only its last condition, silently.
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), None, None, yaml_problem(exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), None, None, "expected a mapping of features")
    for feature, strategies in data.items():
        if not isinstance(strategies, dict):
            raise ConfigError(str(path), None, str(feature), "expected a mapping of strategies")
        for strategy, condition in strategies.items():
            _check_condition(path, f"{feature}.{strategy}", condition)
    return Expectations(path, data)
