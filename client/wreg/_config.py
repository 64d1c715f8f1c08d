"""Client settings, read once from the environment (``WREG_*``).

A plain dataclass: pydantic-settings cost ~70 ms of imports on every ``wreg`` command
(issue 11), for nine variables. ``ClientSettings.from_env()`` reads them as
pydantic-settings did: names case-insensitively (``WREG_URL`` wins over ``wreg_url``),
values with the same parsing (integers may be written ``2.0`` or ``1_000``, booleans as
``1/0``, ``true/false``, ``yes/no``, ``on/off``, ``t/f``, ``y/n`` in any case) and the same
bounds. A bad value raises ``SettingsError`` (``SETTING_INVALID``): one line naming the
variable, the value and what it accepts (``WREG_CONCURRENCY='abc': expected an integer
from 1 to 256``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args

from wreg.core.errors import ErrorCode, InvalidInput

DEFAULT_URL = "http://127.0.0.1:8080"
PREFIX: Final = "WREG_"

Sharing = Literal["auto", "group", "private"]


class SettingsError(InvalidInput, ValueError):
    """A ``WREG_*`` setting that does not parse or is out of range (``SETTING_INVALID``):
    one line naming the variable, its value and what it accepts; ``detail`` has the three
    (``variable``, ``value``, ``expected``). A ``WregError``, and a ``ValueError`` as
    pydantic's ``ValidationError`` was."""

    def __init__(
        self, name: str, value: object, expected: str | None = None, *, label: str | None = None
    ) -> None:
        expected = expected or EXPECTED[name]
        shown = value if isinstance(value, str) else repr(value)
        label = label or variable(name)
        super().__init__(
            ErrorCode.SETTING_INVALID,
            f"{label}={_shown(shown)}: expected {expected}",
            detail={"variable": label, "value": shown, "expected": expected},
        )


def parse_uids(text: str) -> list[int]:
    """``"1001, 1002"`` -> ``[1001, 1002]`` (``WREG_CACHE_TRUSTED_UIDS``); raises
    ``ValueError`` on anything else."""
    return [int(u) for u in text.replace(",", " ").split()]


def variable(name: str) -> str:
    """The environment variable of setting ``name``: ``concurrency`` -> ``WREG_CONCURRENCY``."""
    return PREFIX + name.upper()


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# pydantic's lax int from a string: ASCII digits, optional sign, single underscores
# between digits, surrounding whitespace, and a zero fraction ("2.0").
_INT: Final = re.compile(r"\s*([+-]?[0-9](?:_?[0-9])*)(?:\.0*)?\s*", re.ASCII)
_TRUE: Final = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE: Final = frozenset({"0", "off", "f", "false", "n", "no"})


def _int(name: str, raw: str) -> int:
    match = _INT.fullmatch(raw)
    if match is None:
        raise SettingsError(name, raw)
    return int(match[1])


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(name, raw) from None


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(name, raw)


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _str(name: str, raw: str) -> str:
    return raw


_PARSERS: Final[dict[str, Callable[[str, str], Any]]] = {
    "url": _str,
    "token": _str,
    "cache": _path,
    "concurrency": _int,
    "timeout": _float,
    "inflight_bytes": _int,
    "fetch_run_bytes": _int,
    "offline": _bool,
    "cache_shared": _str,
    "cache_trusted_uids": _str,
}


def registry_root(url: str, label: str | None = None) -> str:
    """``url`` without a trailing ``/``; raises ``SettingsError`` (named ``label``, default
    ``WREG_URL``) when it ends in ``/v1``: the registry URL is its root, wreg adds
    ``/v1/...`` itself, and ``http://host/v1`` would send every request to ``/v1/v1/...``
    (not found, which used to read as an unknown model)."""
    root = url.rstrip("/")
    if root.endswith("/v1"):
        expected = f"the registry's root URL, without /v1: {_shown(root[:-3])}"
        raise SettingsError("url", url, expected, label=label)
    return root


def _default_cache() -> Path:
    return Path.home() / ".cache" / "wreg"


# ``WREG_INFLIGHT_BYTES`` when unset: this, or an eighth of a cgroup memory limit.
INFLIGHT_DEFAULT: Final = 128 << 20
INFLIGHT_MIN: Final = 8 << 20
FETCH_RUN_DEFAULT: Final = 16 << 20
INFLIGHT_MAX_DEFAULT: Final = 1 << 30
_UNLIMITED: Final = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def memory_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """This process's cgroup memory limit in bytes (the smallest on its path, v1 or v2),
    or None when there is none or it cannot be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    candidates: list[Path] = []
    for line in lines:
        _id, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        rel = Path(path.lstrip("/"))
        if controllers == "" and (root / "cgroup.controllers").exists():  # v2
            for part in (rel, *rel.parents):
                candidates.append(root / part / "memory.max")
        elif "memory" in controllers.split(","):  # v1
            for part in (rel, *rel.parents):
                candidates.append(root / "memory" / part / "memory.limit_in_bytes")
    limits = []
    for candidate in candidates:
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            limits.append(int(text))
    return min(limits) if limits else None


def default_inflight_bytes(limit: int | None = None) -> int:
    """``INFLIGHT_DEFAULT``, or under a cgroup memory limit an eighth of it (between
    ``INFLIGHT_MIN`` and ``INFLIGHT_MAX_DEFAULT``): a small container does not run out
    of memory, a large one can keep more chunks in flight."""
    limit = memory_limit() if limit is None else limit
    if limit is None:
        return INFLIGHT_DEFAULT
    return max(INFLIGHT_MIN, min(limit // 8, INFLIGHT_MAX_DEFAULT))


EXPECTED: Final[dict[str, str]] = {
    "url": "the registry's root URL, e.g. http://127.0.0.1:8080",
    "token": "a token",
    "cache": "a directory",
    "concurrency": "an integer from 1 to 256",
    "timeout": "a number of seconds above 0",
    "inflight_bytes": f"an integer number of bytes, at least {INFLIGHT_MIN} (8 MiB)",
    "fetch_run_bytes": "an integer number of bytes, 0 or more",
    "offline": "a boolean: 1/0, true/false, yes/no or on/off",
    "cache_shared": "one of auto, group, private",
    "cache_trusted_uids": "a list of numeric uids, e.g. 1001,1002",
}
"""What each setting accepts, as its ``SettingsError`` says."""


@dataclass(frozen=True)
class ClientSettings:
    """``WREG_URL``, ``WREG_TOKEN``, ``WREG_CACHE``, ``WREG_CONCURRENCY``, ``WREG_TIMEOUT``,
    ``WREG_INFLIGHT_BYTES``, ``WREG_FETCH_RUN_BYTES``, ``WREG_OFFLINE``, ``WREG_CACHE_SHARED``,
    ``WREG_CACHE_TRUSTED_UIDS``. Built directly, it holds the defaults (and checks what
    it is given); ``from_env()`` reads the environment."""

    url: str = DEFAULT_URL
    token: str | None = None
    cache: Path = field(default_factory=_default_cache)
    concurrency: int = 16  # 1..256
    timeout: float = 60.0  # seconds, > 0
    # Chunk bytes a push or pull holds in memory at once (buffers allocated once, reused);
    # unset: 128 MiB, or an eighth of the cgroup memory limit (default_inflight_bytes).
    inflight_bytes: int = field(default_factory=default_inflight_bytes)  # >= 8 MiB
    # Large chunks (1 MiB and more) fetched together in one batched request, up to this
    # many raw bytes: fewer requests, each chunk sent with sendfile by wreg-server. 0: each
    # alone, on the cacheable GET (set 0 when an HTTP cache or CDN serves the chunks).
    fetch_run_bytes: int = FETCH_RUN_DEFAULT  # >= 0
    # Resolve tags from the node cache's refs/ and never contact the registry.
    offline: bool = False
    # private: the cache is this user's; group: shared by its group (see wreg._cache);
    # auto: group if the cache root exists group-writable and setgid.
    cache_shared: Sharing = "auto"
    # Uids besides yours and root's whose read-only blobs a pull uses without re-hashing.
    cache_trusted_uids: str = ""

    def __post_init__(self) -> None:
        registry_root(self.url)
        if not 1 <= self.concurrency <= 256:
            raise SettingsError("concurrency", self.concurrency)
        if not self.timeout > 0:  # also refuses nan
            raise SettingsError("timeout", self.timeout)
        if self.inflight_bytes < INFLIGHT_MIN:
            raise SettingsError("inflight_bytes", self.inflight_bytes)
        if self.fetch_run_bytes < 0:
            raise SettingsError("fetch_run_bytes", self.fetch_run_bytes)
        if self.cache_shared not in get_args(Sharing):
            raise SettingsError("cache_shared", self.cache_shared)
        try:
            parse_uids(self.cache_trusted_uids)
        except ValueError:
            raise SettingsError("cache_trusted_uids", self.cache_trusted_uids) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """The settings ``environ`` (default ``os.environ``) sets; the rest default."""
        found: dict[str, str] = {}
        for key, raw in (os.environ if environ is None else environ).items():
            if key[: len(PREFIX)].upper() == PREFIX:
                name = key[len(PREFIX) :].lower()
                if key.isupper() or name not in found:  # WREG_URL wins over wreg_url
                    found[name] = raw
        values = {
            f.name: _PARSERS[f.name](f.name, found[f.name]) for f in fields(cls) if f.name in found
        }
        try:
            return cls(**values)
        except SettingsError as exc:  # name the value as written (' 0x' -> ' 0x', not 0)
            name = str(exc.detail["variable"])[len(PREFIX) :].lower()
            raise SettingsError(name, found[name], exc.detail["expected"]) from None

    @property
    def trusted_uids(self) -> list[int]:
        return parse_uids(self.cache_trusted_uids)
