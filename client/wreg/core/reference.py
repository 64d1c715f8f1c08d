"""References: ``NAME``, ``NAME@TAG`` or ``NAME@blake3:<hex>``.

Names are ``[namespace/]name`` with lowercase ``[a-z0-9._-]`` segments; a bare name
means the tag ``latest``. ``:`` is never part of a name, so ``team/model:v1`` (the Docker
spelling) is refused with a hint: ``did you mean 'team/model@v1'?``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from wreg.core.digest import PREFIX, is_digest
from wreg.core.errors import ErrorCode, InvalidInput

DEFAULT_TAG: Final = "latest"
MAX_NAME_LENGTH: Final = 255
MAX_TAG_LENGTH: Final = 128
_SEGMENT: Final = r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?"
NAME_PATTERN: Final = rf"{_SEGMENT}(?:/{_SEGMENT})?"
TAG_PATTERN: Final = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
_NAME_RE: Final = re.compile(NAME_PATTERN)
_TAG_RE: Final = re.compile(TAG_PATTERN)


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name) or ".." in name:
        raise ErrorCode.NAME_INVALID.error(
            f"invalid repository name {name!r}: expected [namespace/]name with lowercase "
            "segments of a-z, 0-9, '.', '_', '-'",
        )
    return name


def validate_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag) or tag.startswith("blake3"):
        raise ErrorCode.TAG_INVALID.error(
            f"invalid tag {tag!r}: expected 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-'"
            " not starting with '.', '-' or 'blake3'",
        )
    return tag


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference: exactly one of ``tag`` and ``digest`` is set."""

    name: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        name, sep, rest = text.partition("@")
        if sep and not rest:
            raise ErrorCode.REFERENCE_INVALID.error(f"invalid reference {text!r}: empty tag")
        if not sep and ":" in name:
            _suggest_at(text)
        validate_name(name)
        if not sep:
            return cls(name, tag=DEFAULT_TAG)
        if rest.startswith(PREFIX):
            if not is_digest(rest):
                raise ErrorCode.DIGEST_INVALID.error(
                    f"invalid reference {text!r}: digest must be {PREFIX}<64 lowercase hex>",
                )
            return cls(name, digest=rest)
        return cls(name, tag=validate_tag(rest))

    @property
    def version(self) -> str:
        """The tag or digest, as used in ``/manifests/{reference}`` URLs."""
        return self.digest if self.digest is not None else (self.tag or DEFAULT_TAG)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def _suggest_at(text: str) -> None:
    """Raise ``REFERENCE_INVALID`` with a hint when ``text`` (``:`` but no ``@``) is a
    valid reference once its first ``:`` is an ``@``; return when it is not."""
    name, _, version = text.partition(":")
    try:
        suggestion = Reference.parse(f"{name}@{version}")
    except InvalidInput:
        return
    raise ErrorCode.REFERENCE_INVALID.error(
        f"invalid reference {text!r}: did you mean {str(suggestion)!r}? "
        "(a tag or digest follows '@', not ':')",
        detail={"reference": text, "suggestion": str(suggestion)},
    )
