"""Hugging Face names in wreg terms (``wreg.core.hf``): the README's mapping rules."""

from __future__ import annotations

import pytest

from wreg.core import hf
from wreg.core.errors import WregError

DIGEST = "blake3:" + "ab" * 32


def test_repository_ids_map_to_lowercase_names() -> None:
    assert hf.name_of("Team-HF/MiniLM-L6") == "team-hf/minilm-l6"
    assert hf.name_of("gpt2") == "gpt2"
    assert hf.name_of("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-minilm-l6-v2"
    )
    for bad in ("_x/y", "a/b/c", "a--b/c", "a/b.", "x" * 300, "a/../b", "ü/x", "", "/x"):
        assert hf.name_of(bad) is None, bad


def test_revisions_map_to_tags() -> None:
    assert hf.tag_of("main") == "latest"
    assert hf.revision_of("latest") == "main"
    assert hf.tag_of("v2") == "v2"
    assert hf.revision_of("v2") == "v2"
    assert hf.tag_of("blake3x") is None
    assert hf.tag_of("-x") is None


def test_commit_ids_are_digest_prefixes() -> None:
    commit = hf.commit_id(DIGEST)
    assert commit == "ab" * 20
    assert hf.is_commit_id(commit)
    assert DIGEST.startswith(hf.digest_prefix(commit))
    assert not hf.is_commit_id("AB" * 20)
    assert not hf.is_commit_id("ab" * 21)


@pytest.mark.parametrize(
    ("validate", "value"),
    [
        (hf.validate_revision, "refs/pr/1"),
        (hf.validate_revision, "x" * 300),
        (hf.validate_revision, "a\nb"),
        (hf.validate_repo_id, "a/b/c"),
        (hf.validate_path_param, "a\x00b"),
        (hf.validate_sha256, "0" * 63),
        (hf.validate_sha256, "G" * 64),
    ],
)
def test_url_parameters_are_bounded(validate: object, value: str) -> None:
    assert callable(validate)
    with pytest.raises(WregError):
        validate(value)
