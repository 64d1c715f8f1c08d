import pytest

from wreg.core.errors import InvalidInput
from wreg.core.reference import Reference

HEX = "ab" * 32


@pytest.mark.parametrize(
    ("text", "name", "tag", "digest"),
    [
        ("llama", "llama", "latest", None),
        ("meta/llama-70b@fp16", "meta/llama-70b", "fp16", None),
        ("a.b_c-d@v1.0", "a.b_c-d", "v1.0", None),
        (f"m@blake3:{HEX}", "m", None, f"blake3:{HEX}"),
    ],
)
def test_parse_valid(text: str, name: str, tag: str | None, digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Llama", "NAME_INVALID"),
        ("", "NAME_INVALID"),
        ("a/b/c", "NAME_INVALID"),
        ("/a", "NAME_INVALID"),
        ("a/", "NAME_INVALID"),
        ("a..b", "NAME_INVALID"),
        ("-a", "NAME_INVALID"),
        ("a b", "NAME_INVALID"),
        ("a@", "REFERENCE_INVALID"),
        ("a@-x", "TAG_INVALID"),
        ("a@x/y", "TAG_INVALID"),
        ("a@" + "t" * 129, "TAG_INVALID"),
        ("a@blake3:XYZ", "DIGEST_INVALID"),
        ("a@blake3:" + "AB" * 32, "DIGEST_INVALID"),
        ("a@sha256:" + HEX, "TAG_INVALID"),
    ],
)
def test_parse_rejects(text: str, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Reference.parse(text)
    assert info.value.code.name == code
