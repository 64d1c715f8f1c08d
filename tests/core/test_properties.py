"""Property tests for the core format (hypothesis).

Each property restates a rule from DESIGN.md / README.md independently of the code under
test, so a change that loosens a rule fails here even when the example-based tests in
the neighbouring files still pass. ~100 examples each by default; ``make soak`` runs the
``soak`` profile (see ``tests/fuzzing.py``).
"""

from __future__ import annotations

import json
import ntpath
import posixpath
import random
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

import tests.fuzzing  # noqa: F401 - registers and loads the hypothesis profile
from wreg.core.digest import digest_bytes
from wreg.core.encoding import (
    HEADER_SIZE,
    Codec,
    Transform,
    decode_chunk,
    decode_chunk_into,
    encode_chunk,
    parse_header,
    transform_for,
)
from wreg.core.errors import ErrorCode, IntegrityError, InvalidInput, WregError
from wreg.core.manifest import (
    MODE_EXEC,
    MODE_FILE,
    ChunkRef,
    FileEntry,
    Manifest,
    canonical_json,
    validate_path,
)
from wreg.core.reference import Reference

T = TypeVar("T")
DTYPES = ["F32", "BF16", "F16", "I64", None]
_WIDTH = {Transform.BYTEGROUP2: 2, Transform.BYTEGROUP4: 4}
_WIDTH |= {Transform.BYTEGROUP2_EXP: 2, Transform.BYTEGROUP4_EXP: 4}

# --------------------------------------------------------------------------------------
# chunk -> encode -> decode -> verify


def _float_bytes(values: list[float], dtype: str | None) -> bytes:
    """Float-like content, so the float transforms and their zstd planes get exercised."""
    arr = np.asarray(values, dtype=np.float32)
    if dtype == "BF16":
        return (arr.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    if dtype == "F16":
        return arr.astype(np.float16).tobytes()
    return arr.tobytes()


@st.composite
def chunk_contents(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """(raw bytes, dtype hint): random, repetitive (compressible) or float-like content,
    truncated to any length, odd ones included."""
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["random", "repeat", "floats"]))
    if kind == "random":
        raw = draw(st.binary(max_size=600))
    elif kind == "repeat":
        unit = draw(st.binary(min_size=1, max_size=9))
        raw = unit * draw(st.integers(1, 3000))
    else:
        values = draw(
            st.lists(
                st.floats(-4, 4, allow_nan=False, width=32) | st.sampled_from([0.0, 1e-3]),
                max_size=2000,
            )
        )
        raw = _float_bytes(values, dtype)
    cut = draw(st.integers(0, 7))
    raw = raw[: max(0, len(raw) - cut)]
    return raw, dtype


@given(chunk_contents())
def test_encode_decode_round_trip(content: tuple[bytes, str | None]) -> None:
    raw, dtype = content
    digest = digest_bytes(raw)
    blob = encode_chunk(raw, dtype)
    codec, transform, raw_len = parse_header(blob)
    assert raw_len == len(raw)
    expected = transform_for(dtype)
    if expected is not Transform.NONE and len(raw) >= 2 * _WIDTH[expected]:
        assert transform is expected
    else:
        assert transform is Transform.NONE
    if codec is Codec.NONE:
        assert blob[HEADER_SIZE:] == raw
    assert bytes(decode_chunk(blob, expected_digest=digest)) == raw
    # Into a larger, dirty, reused buffer: only the first raw_len bytes are written.
    out = bytearray(b"\xa5" * (len(raw) + 13))
    assert decode_chunk_into(blob, memoryview(out), expected_digest=digest) == len(raw)
    assert bytes(out[: len(raw)]) == raw
    assert out[len(raw) :] == b"\xa5" * 13


def _attempt(call: Callable[[], T]) -> T | WregError:
    """What ``call`` returns, or the ``WregError`` it raises: for properties where both are
    right answers (so ``pytest.raises`` cannot be used) and the error is checked after."""
    try:
        return call()
    except WregError as exc:
        return exc


def _decode_outcome(blob: bytes, digest: str) -> bytes | None:
    """The decoded bytes, or None when decoding refused the blob in a documented way."""
    outcome = _attempt(lambda: bytes(decode_chunk(blob, expected_digest=digest)))
    if not isinstance(outcome, WregError):
        return outcome
    if isinstance(outcome, IntegrityError):
        assert outcome.code is ErrorCode.DIGEST_MISMATCH
        assert outcome.detail["expected"] == digest
        assert outcome.detail["actual"] != digest
    else:
        assert isinstance(outcome, InvalidInput), outcome
        assert outcome.code is ErrorCode.CHUNK_INVALID, outcome.code
    return None


@given(chunk_contents(), st.data())
def test_single_byte_corruption_never_passes_as_other_bytes(
    content: tuple[bytes, str | None], data: st.DataObject
) -> None:
    raw, dtype = content
    digest = digest_bytes(raw)
    blob = bytearray(encode_chunk(raw, dtype))
    index = data.draw(st.integers(0, len(blob) - 1), label="index")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != blob[index]), label="value")
    blob[index] = value
    decoded = _decode_outcome(bytes(blob), digest)
    # Either refused, or (a byte the format ignores, e.g. inside a zstd frame header's
    # optional fields) decoded to exactly the original bytes.
    assert decoded is None or decoded == raw
    # Without an expected digest, decoding may return other bytes — but then the
    # verification step every reader does must catch them.
    unverified = _attempt(lambda: bytes(decode_chunk(bytes(blob))))
    if isinstance(unverified, WregError):
        assert isinstance(unverified, InvalidInput), unverified
        assert unverified.code is ErrorCode.CHUNK_INVALID
    else:
        assert unverified == raw or digest_bytes(unverified) != digest


@given(chunk_contents(), st.data())
def test_truncated_or_extended_chunk_is_refused(
    content: tuple[bytes, str | None], data: st.DataObject
) -> None:
    raw, dtype = content
    digest = digest_bytes(raw)
    blob = encode_chunk(raw, dtype)
    if data.draw(st.booleans(), label="truncate"):
        assume(len(blob) > 0)
        damaged = blob[: data.draw(st.integers(0, len(blob) - 1), label="keep")]
    else:
        damaged = blob + data.draw(st.binary(min_size=1, max_size=16), label="extra")
    assert _decode_outcome(damaged, digest) is None


# --------------------------------------------------------------------------------------
# manifests: canonical form

_SEGMENT = st.from_regex(r"[a-z0-9_][a-z0-9_-]{0,7}(\.[a-z0-9]{1,4})?", fullmatch=True).filter(
    lambda s: (
        s.split(".")[0] not in {"con", "prn", "aux", "nul"}
        and not re.fullmatch(r"(com|lpt)[0-9]", s.split(".")[0])
    )
)
_PATH = st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join)
_HEX_DIGEST = st.binary(min_size=32, max_size=32).map(lambda b: "blake3:" + b.hex())


def _tree_ok(paths: list[str]) -> bool:
    """No path is also a directory of another (paths are already unique, lowercase)."""
    dirs = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    return not dirs & set(paths)


@st.composite
def file_entries(draw: st.DrawFn) -> list[FileEntry]:
    paths = draw(st.lists(_PATH, max_size=8, unique=True).filter(_tree_ok))
    entries = []
    for path in paths:
        sizes = draw(st.lists(st.integers(1, 1 << 40), max_size=4))
        chunks = tuple(ChunkRef(draw(_HEX_DIGEST), size) for size in sizes)
        mode = draw(st.sampled_from([MODE_FILE, MODE_EXEC]))
        entries.append(FileEntry.of(path, chunks, mode))
    return entries


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
)
_METADATA = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        _JSON_SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=12,
    ),
    max_size=6,
)


def _reorder_keys(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another insertion order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _reorder_keys(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_reorder_keys(v, rng) for v in value]
    return value


@given(file_entries(), _METADATA, st.randoms(use_true_random=False))
def test_manifest_canonical_form_is_stable(
    files: list[FileEntry], metadata: dict[str, Any], rng: random.Random
) -> None:
    manifest = Manifest.build(files, metadata)
    data = manifest.to_json_bytes()
    assert Manifest.from_json_bytes(data).to_json_bytes() == data
    assert Manifest.from_json_bytes(data).digest == manifest.digest == digest_bytes(data)
    # The bytes are the canonical JSON of themselves: sorted keys, no whitespace, UTF-8.
    assert canonical_json(json.loads(data)) == data
    assert [f.path for f in manifest.files] == sorted(f.path for f in files)

    # Input order does not matter: files shuffled, every object's keys reordered.
    shuffled = list(files)
    rng.shuffle(shuffled)
    again = Manifest.build(shuffled, _reorder_keys(metadata, rng))
    assert again.to_json_bytes() == data
    assert again.digest == manifest.digest

    # Non-canonical spellings of the same document parse to the same canonical bytes.
    doc = _reorder_keys(json.loads(data), rng)
    for spelled in (json.dumps(doc, indent=2), json.dumps(doc, ensure_ascii=True)):
        assert Manifest.from_json_bytes(spelled.encode()).to_json_bytes() == data


@pytest.mark.parametrize(
    "body",
    [
        b'{"files":[],"metadata":{"k":NaN},"schema":1}',
        b'{"files":[],"metadata":{"k":Infinity},"schema":1}',
        b'{"files":[],"metadata":{"k":1e999},"schema":1}',
        b'{"files":[],"metadata":{"k":"\\ud800"},"schema":1}',
    ],
)
def test_manifest_without_canonical_form_is_invalid_input(body: bytes) -> None:
    """Whatever parses must have a canonical form, or be refused as MANIFEST_INVALID."""
    with pytest.raises(InvalidInput) as info:
        Manifest.from_json_bytes(body).to_json_bytes()
    assert info.value.code is ErrorCode.MANIFEST_INVALID


# --------------------------------------------------------------------------------------
# references: exactly the grammar

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_NAME_SEGMENT = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(_ALNUM),
    st.text(_ALNUM + "._-", max_size=20),
    st.sampled_from(["", *_ALNUM]),
).filter(lambda s: ".." not in s and (len(s) == 1 or s[-1] in _ALNUM))
_NAME = st.one_of(_NAME_SEGMENT, st.tuples(_NAME_SEGMENT, _NAME_SEGMENT).map("/".join))
_TAG_CHARS = _ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-"
_TAG = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ_"),
    st.text(_TAG_CHARS, max_size=127),
).filter(lambda t: not t.startswith("blake3"))

# The grammar, restated independently of wreg.core.reference (README "Concepts").
_ORACLE_SEGMENT = r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?"
_ORACLE_NAME = re.compile(rf"{_ORACLE_SEGMENT}(/{_ORACLE_SEGMENT})?")
_ORACLE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_ORACLE_DIGEST = re.compile(r"blake3:[0-9a-f]{64}")


def _in_grammar(text: str) -> bool:
    name, sep, version = text.partition("@")
    if len(name) > 255 or ".." in name or not _ORACLE_NAME.fullmatch(name):
        return False
    if not sep:
        return True
    if _ORACLE_DIGEST.fullmatch(version):
        return True
    return bool(_ORACLE_TAG.fullmatch(version)) and not version.startswith("blake3")


@given(_NAME, st.one_of(st.none(), _TAG, _HEX_DIGEST))
def test_reference_accepts_the_grammar(name: str, version: str | None) -> None:
    text = name if version is None else f"{name}@{version}"
    ref = Reference.parse(text)
    assert ref.name == name
    if version is None:
        assert (ref.tag, ref.digest) == ("latest", None)
    elif version.startswith("blake3:"):
        assert (ref.tag, ref.digest) == (None, version)
    else:
        assert (ref.tag, ref.digest) == (version, None)
    assert Reference.parse(str(ref)) == ref


_NEAR_ALPHABET = _TAG_CHARS + "@/:. \t\n\x00Ééß٣/\\"


@st.composite
def reference_like_text(draw: st.DrawFn) -> str:
    """Arbitrary text, and valid references with a few characters changed."""
    if draw(st.booleans()):
        return draw(st.text(max_size=40))
    name = draw(_NAME)
    version = draw(st.one_of(st.none(), _TAG, _HEX_DIGEST))
    text = list(name if version is None else f"{name}@{version}")
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        char = draw(st.sampled_from(_NEAR_ALPHABET))
        if op == "insert":
            text.insert(pos, char)
        elif pos < len(text):
            if op == "replace":
                text[pos] = char
            else:
                del text[pos]
    return "".join(text)


@given(reference_like_text())
def test_reference_parsing_is_exactly_the_grammar(text: str) -> None:
    note(f"in grammar: {_in_grammar(text)}")
    ref = _attempt(lambda: Reference.parse(text))
    if isinstance(ref, WregError):
        assert isinstance(ref, InvalidInput), ref
        assert ref.code.name in {
            "NAME_INVALID",
            "TAG_INVALID",
            "DIGEST_INVALID",
            "REFERENCE_INVALID",
        }
        assert not _in_grammar(text), f"{text!r} is in the grammar but was rejected"
        return
    assert _in_grammar(text), f"{text!r} is outside the grammar but parsed as {ref!r}"
    assert Reference.parse(str(ref)) == ref


# --------------------------------------------------------------------------------------
# paths: nothing accepted escapes the model directory

_PATH_PIECES = st.sampled_from(
    ["a", "B", "x.bin", ".", "..", "...", "/", "//", "\\", "C:", "c:", ":", " ", "\x00", "\n",
     "~", "$HOME", "con", "NUL.txt", "é", "e\u0301", "\u2024", "\uff0e\uff0e", "%2e%2e"]
)  # fmt: skip


@given(st.one_of(st.text(max_size=30), st.lists(_PATH_PIECES, max_size=8).map("".join)))
def test_path_validation_never_accepts_an_escape(path: str) -> None:
    accepted = _attempt(lambda: validate_path(path))
    if isinstance(accepted, WregError):
        assert isinstance(accepted, InvalidInput), accepted
        assert accepted.code is ErrorCode.PATH_UNSAFE
        return
    assert accepted == path
    normalized = posixpath.normpath(path)
    # Escaping means a leading ".." *segment* ("..0" is an ordinary name) or a root.
    assert normalized.split("/")[0] != "..", path
    assert not normalized.startswith("/"), path
    assert normalized == path, "an accepted path needs no normalization"
    assert not posixpath.isabs(path)
    assert not ntpath.isabs(path)
    assert ntpath.splitdrive(path)[0] == "", path
    assert "\\" not in path
    assert "\x00" not in path
    assert all(part not in {"", ".", ".."} for part in path.split("/"))


@pytest.mark.parametrize(
    "path", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.", "C:/x", "a\\..\\b", ""]
)
def test_path_validation_rejects_known_escapes(path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_path(path)
    assert info.value.code is ErrorCode.PATH_UNSAFE
