"""docs/WIRE-FORMAT.md is enough to write a client: a decoder written from it alone decodes
what wreg writes.

``tests/core/wire_decoder.py`` stands for a client in another language: it imports nothing
of wreg (checked here, in its source and in a fresh interpreter). wreg is used only to
*produce* chunks — cut and encoded exactly as ``wreg push`` does, from the real model's
files (fp32 safetensors, its bf16 variant, the GGUF model with F16, BF16, F32 and Q8_0
tensors) — and every chunk decodes to the file's bytes and its digest. The batched fetch
of a live server is decoded in ``tests/e2e/test_wire_live.py``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.core import wire_decoder
from wreg.core.batch import encode_frames
from wreg.core.chunking import plan_file
from wreg.core.digest import digest_bytes, file_identity
from wreg.core.encoding import Transform, _encode_planes, decode_chunk, encode_chunk
from wreg.core.manifest import ChunkRef, FileEntry, Manifest
from wreg.testing import realdata
from wreg.testing.realdata import RealDataUnavailable

DECODER = Path(wire_decoder.__file__)
ROOT = Path(__file__).resolve().parents[2]
# A mode: (codec, transform, kinds of its byte planes).
Mode = tuple[int, int, tuple[int, ...]]


@pytest.fixture(scope="module")
def model_dirs() -> list[Path]:
    """The real model (fp32), its bf16 variant and its GGUF form (F16, BF16, F32, Q8_0)."""
    try:
        return [realdata.base_model(), realdata.variant("bf16"), realdata.gguf_model()]
    except RealDataUnavailable as exc:
        pytest.skip(f"real model unavailable: {exc}")


def _chunks(directory: Path) -> list[tuple[str, bytes, bytes]]:
    """(digest, raw, encoded) of every chunk of every file, cut and encoded as a push does."""
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for spec in plan_file(path):
            raw = data[spec.offset : spec.offset + spec.length]
            out.append((digest_bytes(raw), raw, encode_chunk(raw, spec.dtype)))
    return out


def test_decoder_imports_nothing_of_wreg() -> None:
    tree = ast.parse(DECODER.read_text())
    imported = [
        name
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    ]
    assert imported, "no imports found: the check is not looking at the decoder"
    assert not [n for n in imported if n.split(".")[0] in {"wreg", "wreg_server", "tests"}]
    # And in a fresh interpreter nothing of wreg gets loaded by importing it.
    probe = (
        "import sys, importlib.util as u;"
        f"s = u.spec_from_file_location('wire_decoder', {str(DECODER)!r});"
        "m = u.module_from_spec(s); s.loader.exec_module(m);"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('wreg', 'wreg_server')))"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed probe
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_every_chunk_of_the_real_model_decodes(model_dirs: list[Path]) -> None:
    """Every chunk of the three real files decodes to its bytes and digest, and between
    them they cover every mode the encoder writes: raw, zstd, and each float transform
    with raw and zstd planes."""
    seen: dict[Mode, int] = defaultdict(int)
    for directory in model_dirs:
        for digest, raw, encoded in _chunks(directory):
            decoded, kinds = wire_decoder.decode_with_kinds(encoded, digest)
            assert decoded == raw
            assert wire_decoder.digest_of(decoded) == digest
            seen[(encoded[5], encoded[6], tuple(kinds))] += 1
    modes = set(seen)
    assert (0, 0, ()) in modes  # raw (a small JSON file zstd does not shrink by 3 %)
    assert (1, 0, ()) in modes  # zstd: headers, JSON, tokenizer, Q8_0 tensors
    for transform in (Transform.BYTEGROUP2, Transform.BYTEGROUP2_EXP, Transform.BYTEGROUP4_EXP):
        stored_as = {k for (_, t, planes) in modes if t == transform for k in planes}
        assert stored_as == {0, 1}, (transform.name, sorted(seen.items()))
    # Every transform the encoder emits, and nothing the spec does not list.
    assert {t for (_, t, _) in modes} == {0, 1, 3, 4}


def _real_f32_bytes(model_dirs: list[Path]) -> bytes:
    weights = model_dirs[0] / realdata.WEIGHTS_FILE
    tensors, _ = realdata.read_safetensors(weights)
    return tensors["encoder.layer.0.attention.self.query.weight"].data


def test_tails_and_bytegroup4(model_dirs: list[Path]) -> None:
    """What the spec allows beyond the real files: bytes past the last whole word (the
    tail), for each transform, and transform 2, which wreg's encoder never picks but every
    decoder must read. Real fp32 bytes, encoded by wreg; wreg's own decoder agrees."""
    data = _real_f32_bytes(model_dirs)
    for dtype in ("F32", "BF16", "F16"):
        for cut in (1, 2, 3):
            raw = data[: len(data) - cut]
            encoded = encode_chunk(raw, dtype)
            assert encoded[6] != 0
            assert wire_decoder.decode(encoded, digest_bytes(raw)) == raw
    for raw in (data, data[:-3], data[:8]):
        encoded = _encode_planes(memoryview(raw), Transform.BYTEGROUP4)
        assert encoded[6] == Transform.BYTEGROUP4
        assert bytes(decode_chunk(encoded, digest_bytes(raw))) == raw
        assert wire_decoder.decode(encoded, digest_bytes(raw)) == raw


def test_wrong_bytes_are_refused(model_dirs: list[Path]) -> None:
    """The spec's checks: digest, header fields, lengths that do not add up."""
    digest, raw, encoded = next(c for c in _chunks(model_dirs[1]) if c[2][6] == 3)
    with pytest.raises(wire_decoder.WireError, match="does not match"):
        wire_decoder.decode(encoded, digest_bytes(raw + b"x"))
    for at, value in ((0, ord("X")), (4, 2), (5, 2), (6, 5), (7, 1)):
        bad = bytearray(encoded)
        bad[at] = value
        with pytest.raises(wire_decoder.WireError):
            wire_decoder.decode(bytes(bad), digest)
    with pytest.raises(wire_decoder.WireError):
        wire_decoder.decode(encoded + b"\0", digest)
    with pytest.raises(wire_decoder.WireError):
        wire_decoder.decode(encoded[:-1], digest)


def test_frames_and_manifest(model_dirs: list[Path]) -> None:
    """A body of frames as wreg writes it, and the manifest of the real model's files
    (canonical JSON, file identities) as ``wreg push`` commits it."""
    chunks = _chunks(model_dirs[0])
    body = encode_frames([(d, e) for d, _, e in chunks])
    parsed = list(wire_decoder.frames(body))
    assert [d for d, _ in parsed] == [d for d, _, _ in chunks]
    assert [wire_decoder.decode(e, d) for d, e in parsed] == [r for _, r, _ in chunks]
    with pytest.raises(wire_decoder.WireError):
        list(wire_decoder.frames(body[:-1]))

    entries = []
    for path in sorted(p for p in model_dirs[0].rglob("*") if p.is_file()):
        data = path.read_bytes()
        refs = [
            ChunkRef(digest_bytes(data[s.offset : s.offset + s.length]), s.length)
            for s in plan_file(path)
        ]
        entries.append(FileEntry.of(str(path.relative_to(model_dirs[0])), refs))
    manifest = Manifest.build(entries, metadata={"source": "test ✓"})
    doc = wire_decoder.parse_manifest(manifest.to_json_bytes(), manifest.digest)
    assert [f["path"] for f in doc["files"]] == [e.path for e in entries]
    for f, e in zip(doc["files"], entries, strict=True):
        assert f["digest"] == e.digest == file_identity((c.digest, c.size) for c in e.chunks)
    assert wire_decoder.file_identity([]) == file_identity([])
