"""Property tests of the mount table parsers: generated tables written in mountinfo syntax
parse back to what was generated, escapes round-trip, and garbage never yields a wrong entry
(either the entry an independent reader finds, or MountTableError)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mountcompat import _constants as C  # noqa: E402
from mountcompat.errors import MountTableError  # noqa: E402
from mountcompat.listing import parse_statmount  # noqa: E402
from mountcompat.mounts import MountAttr  # noqa: E402
from mountcompat.mounttable import (  # noqa: E402
    MountEntry,
    Propagation,
    format_mountinfo_line,
    mangle,
    parse_mountinfo,
    parse_mountinfo_line,
    unmangle,
)

# No example database: nothing written into the checkout.
SETTINGS = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(SETTINGS, max_examples=300)
MOST = settings(SETTINGS, max_examples=1000)

# Pieces that break naive parsers: separators, escapes, line breaks of str.splitlines(),
# bytes that are not UTF-8, letters of several bytes.
AWKWARD = [
    b" ", b"\t", b"\n", b"\\", b"\r", b"\x0b", b"\x0c", b"\x1c", "\u0085".encode(),
    "\u2028".encode(), "\u2029".encode(), b"\xff", b"\xc3", b"\xed\xb2\x80", "\u00e9".encode(),
    "\u65e5".encode(), "\U0001f600".encode(), b"#", b",", b"-", b":", b"=", b"\\040", b"\\1",
    b"/", b"a", b"0", b" - ", b"shared:1",
]  # fmt: skip
# A name holds any byte but NUL.
any_bytes = st.binary(min_size=1, max_size=4).map(lambda b: b.replace(b"\0", b"\x01"))
name = st.lists(st.sampled_from(AWKWARD) | any_bytes, min_size=1, max_size=8).map(b"".join)
word = st.text(st.characters(exclude_characters=" ,\n\0", exclude_categories=["Cs"]), min_size=1)
number = st.integers(0, 2**31 - 1)
known_tags = ("shared", "master", "propagate_from", "unbindable")
other_tag = word.filter(lambda w: w != "-" and w.partition(":")[0] not in known_tags)


@st.composite
def propagations(draw: st.DrawFn) -> Propagation:
    master = draw(st.none() | number)
    return Propagation(
        shared=draw(st.none() | number),
        master=master,
        propagate_from=draw(st.none() | number) if master is not None else None,
        unbindable=draw(st.booleans()),
        other=tuple(draw(st.lists(other_tag, max_size=2))),
    )


@st.composite
def entries(draw: st.DrawFn) -> MountEntry:
    return MountEntry(
        mount_id=draw(number),
        parent_id=draw(number),
        major=draw(st.integers(0, 4095)),
        minor=draw(st.integers(0, 2**20 - 1)),
        root=os.fsdecode(draw(name)),
        mountpoint=os.fsdecode(draw(name)),
        options=tuple(draw(st.lists(word, min_size=1, max_size=4))),
        fstype=os.fsdecode(draw(name)),
        source=os.fsdecode(draw(st.just(b"") | name)),
        super_options=tuple(
            os.fsdecode(o) for o in [draw(name), *draw(st.lists(st.just(b"") | name, max_size=3))]
        ),
        propagation=draw(propagations()),
    )


tables = st.lists(entries(), max_size=12)


def write(table: list[MountEntry]) -> bytes:
    return b"".join(format_mountinfo_line(e) + b"\n" for e in table)


@MANY
@given(tables)
def test_a_generated_table_parses_back(table: list[MountEntry]) -> None:
    data = write(table)
    assert parse_mountinfo(data) == table
    assert [parse_mountinfo_line(line) for line in data.split(b"\n") if line] == table
    assert parse_mountinfo(os.fsdecode(data)) == table


@MANY
@given(st.binary(), st.sampled_from([b" \t\n\\", b" \t\n\\#", b" \t\n\\,", bytes(range(256))]))
def test_escapes_round_trip(raw: bytes, special: bytes) -> None:
    escaped = mangle(raw, special)
    assert not any(c in escaped for c in b" \t\n")
    assert unmangle(escaped) == raw


# --- an independent reader, for garbage --------------------------------------------------

_LINE = re.compile(
    rb"(\d+) (\d+) (\d+):(\d+) ([^ ]+) ([^ ]+) ([^ ]+)((?: (?!-(?: |\Z))[^ ]+)*) - "
    rb"([^ ]+) ([^ ]*) ([^ ].*)\Z",
    re.DOTALL,
)


def _unmangle(raw: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(raw):
        digits = raw[i + 1 : i + 4]
        if raw[i : i + 1] == b"\\" and re.fullmatch(rb"[0-7]{3}", digits) and int(digits, 8) < 256:
            out.append(int(digits, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _propagation(words: list[bytes]) -> Propagation | None:
    seen: dict[str, object] = {}
    other = []
    for w in (os.fsdecode(w) for w in words):
        tag, colon, value = w.partition(":")
        if tag in ("shared", "master", "propagate_from"):
            if not (colon and re.fullmatch("[0-9]+", value)) or tag in seen:
                return None
            seen[tag] = int(value)
        elif w == "unbindable":
            if w in seen:
                return None
            seen[w] = True
        else:
            other.append(w)
    return Propagation(
        seen.get("shared"),  # type: ignore[arg-type]
        seen.get("master"),  # type: ignore[arg-type]
        seen.get("propagate_from"),  # type: ignore[arg-type]
        bool(seen.get("unbindable")),
        tuple(other),
    )


def reference(data: bytes) -> list[MountEntry] | None:
    """What a careful reader makes of a table: the entries, or None for "malformed"."""
    found = []
    for line in data.split(b"\n"):
        if not line:
            continue
        m = _LINE.match(line)
        prop = _propagation(m.group(8).split(b" ")[1:]) if m else None
        if m is None or prop is None:
            return None
        g = [os.fsdecode(_unmangle(x)) for x in m.groups()]
        mount_id, parent_id, major, minor = map(int, m.groups()[:4])
        found.append(
            MountEntry(
                mount_id,
                parent_id,
                major,
                minor,
                g[4],
                g[5],
                tuple(os.fsdecode(_unmangle(o)) for o in m.group(7).split(b",")),
                g[8],
                g[9],
                tuple(os.fsdecode(_unmangle(o)) for o in m.group(11).split(b",")),
                prop,
            )
        )
    return found


STRUCTURAL = [b" ", b"\n", b"-", b" - ", b":", b"\\", b"\\0", b"0", b"x", b"", b"  ", b","]


@st.composite
def garbage(draw: st.DrawFn) -> bytes:
    data = bytearray(write(draw(st.lists(entries(), max_size=4))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 3))
        data[at : at + cut] = draw(st.sampled_from(STRUCTURAL) | st.binary(max_size=3))
    return bytes(data)


@pytest.mark.timeout(300)
@MOST
@given(st.one_of(garbage(), st.binary(max_size=200)))
def test_garbage_never_yields_a_wrong_entry(data: bytes) -> None:
    expected = reference(data)
    try:
        parsed = parse_mountinfo(data)
    except MountTableError as exc:
        event(f"rejected: {exc.field}")
        assert expected is None, f"rejected a valid table: {exc}"
        assert exc.line is not None and 1 <= exc.line <= data.count(b"\n") + 1
        return
    event("accepted")
    assert parsed == expected


# --- statmount ------------------------------------------------------------------------------


def statmount_answer(entry: MountEntry, raw_point: bytes, raw_source: bytes) -> bytes:
    strings = {
        "fstype": os.fsencode(entry.fstype),
        "root": os.fsencode(entry.root),
        "point": raw_point,
        "source": raw_source,
        "opts": b",".join(mangle(os.fsencode(o), b" \t\n\\,") for o in entry.super_options[1:]),
    }
    blob, offsets = b"\0", {}
    for key, text in strings.items():
        offsets[key] = len(blob)
        blob += text + b"\0"
    mask = 0x1 | 0x2 | 0x8 | 0x10 | 0x20 | C.STATMOUNT_SB_SOURCE
    mask |= C.STATMOUNT_MNT_OPTS if len(entry.super_options) > 1 else 0
    header = struct.pack(
        "=IIQIIQIIQQIIQQQQQIIQII",
        512 + len(blob),
        offsets["opts"],
        mask,
        entry.major,
        entry.minor,
        0,
        0,
        offsets["fstype"],
        5,
        6,
        entry.mount_id,
        entry.parent_id,
        int(MountAttr.NOSUID),
        C.MS_PRIVATE,
        0,
        0,
        0,
        offsets["root"],
        offsets["point"],
        0,
        0,
        offsets["source"],
    )
    return header.ljust(512, b"\0") + blob


@MANY
@given(entries(), name, st.just(b"") | name)
def test_statmount_names_decode_as_mountinfo_ones(
    entry: MountEntry, point: bytes, source: bytes
) -> None:
    entry = entry._replace(
        mountpoint=os.fsdecode(point),
        source=os.fsdecode(source),
        options=("rw", "nosuid", "relatime"),
        super_options=("rw", *entry.super_options[1:]),
        propagation=Propagation(),
    )
    got = parse_statmount(statmount_answer(entry, point, source))
    expected = entry if entry.super_options[1:] != ("",) else entry._replace(super_options=("rw",))
    assert got._replace(unique_id=None, parent_unique_id=None, origin="mountinfo") == expected
    assert os.fsencode(got.mountpoint) == point and os.fsencode(got.source or "") == source


# --- util-linux on the same text -----------------------------------------------------------

FINDMNT_COLUMNS = "ID,PARENT,MAJ:MIN,FSROOT,TARGET,SOURCE,FSTYPE,VFS-OPTIONS,FS-OPTIONS,OPT-FIELDS"


def findmnt_file(path: str) -> list[dict[str, object]]:
    """findmnt reading a table from a file (libmount's parser, not the kernel's table).
    Its JSON holds names as raw bytes (lib/jsonwrt.c escapes only '"', '\\' and controls
    below 0x20), so the output is decoded as os.fsdecode would."""
    out = subprocess.run(
        ["findmnt", "--tab-file", path, "--json", "--list", "--nofsroot", "-o", FINDMNT_COLUMNS],
        capture_output=True,
        check=False,
    )
    if out.returncode == 1 and not out.stdout:  # it found nothing it could read
        return []
    out.check_returncode()
    return list(json.loads(os.fsdecode(out.stdout))["filesystems"])


def as_findmnt(entry: MountEntry) -> dict[str, object]:
    """What findmnt shows for an entry. libmount strips one '\\r' from the end of each line
    (libmount/src/tab_parse.c, mnt_table_parse_next), which is the end of the super options;
    findmnt shows an empty string, and a zero id or device number, as null (misc-utils/
    findmnt.c, get_data: 0 means "unknown" there; the kernel gives no mount those)."""
    fs_options = ",".join(entry.super_options)
    return {
        "id": entry.mount_id or None,
        "parent": entry.parent_id or None,
        "maj:min": f"{entry.major}:{entry.minor}" if entry.major or entry.minor else None,
        "fsroot": entry.root,
        "target": entry.mountpoint,
        "source": entry.source or None,
        "fstype": entry.fstype,
        "vfs-options": ",".join(entry.options),
        "fs-options": fs_options.removesuffix("\r") or None,
        "opt-fields": " ".join(entry.propagation.fields) or None,
    }


# libmount finds the propagation with strstr(): a tag that merely contains "shared:",
# "master:" or "unbindable" reads as that (mnt_fs_get_propagation). The kernel writes none.
def without_lookalike_tags(entry: MountEntry) -> MountEntry:
    lookalike = ("shared:", "master:", "unbindable")
    other = tuple(w for w in entry.propagation.other if not any(t in w for t in lookalike))
    return entry._replace(propagation=entry.propagation._replace(other=other))


@pytest.mark.timeout(300)
@MANY
@given(st.lists(entries().map(without_lookalike_tags), min_size=1, max_size=6))
def test_findmnt_reads_generated_tables_the_same(table: list[MountEntry]) -> None:
    if shutil.which("findmnt") is None:
        pytest.skip("findmnt is not installed")
    data = write(table)
    with tempfile.NamedTemporaryFile(suffix=".mountinfo") as f:
        f.write(data)
        f.flush()
        shown = findmnt_file(f.name)
    assert parse_mountinfo(data) == table
    # With its trailing \r gone, a line whose super options were that \r alone has none:
    # libmount skips it as a parse error.
    readable = [e for e in table if ",".join(e.super_options).removesuffix("\r")]
    assert shown == [as_findmnt(e) for e in readable]
