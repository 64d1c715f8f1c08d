import blake3
import pytest

from wreg.core.digest import PREFIX, Hasher, digest_bytes, digest_of_hex, hex_of, validate_digest
from wreg.core.errors import ErrorCode, InvalidInput


def test_digest_is_blake3_of_raw_bytes() -> None:
    data = b"weights" * 1000
    assert digest_bytes(data) == "blake3:" + blake3.blake3(data).hexdigest()


def test_large_inputs_hash_the_same_with_threads() -> None:
    data = bytes(range(256)) * (40 * 4096)  # 40 MiB: takes the multithreaded path
    h = Hasher()
    for i in range(0, len(data), 3_000_001):
        h.update(data[i : i + 3_000_001])
    assert digest_bytes(data) == h.digest() == "blake3:" + blake3.blake3(data).hexdigest()


@pytest.mark.parametrize(
    "bad", ["", "blake3:", "sha256:" + "0" * 64, "blake3:" + "0" * 63, "blake3:" + "G" * 64]
)
def test_validate_rejects(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_digest(bad)
    assert info.value.code is ErrorCode.DIGEST_INVALID


def test_hex_of() -> None:
    d = digest_bytes(b"x")
    assert hex_of(d) == d.removeprefix("blake3:")


def test_hex_and_digest_convert_both_ways() -> None:
    d = digest_bytes(b"weights")
    assert digest_of_hex(hex_of(d)) == d
    assert d == PREFIX + hex_of(d)
    for bad in ("", "A" * 64, "0" * 63, "../" + "0" * 61):
        with pytest.raises(InvalidInput):
            digest_of_hex(bad)
