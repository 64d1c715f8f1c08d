"""Stored tokens: ``wreg login`` writes them, ``wreg.Client`` reads them.

One JSON file, ``$XDG_CONFIG_HOME/wreg/credentials.json`` (``~/.config/wreg/…`` without
``XDG_CONFIG_HOME``), mapping each registry URL to its token::

    {"registries": {"https://wreg.example.com": {"token": "wreg_…"}}}

The directory is created mode 0700 and the file written mode 0600 (atomically: a temp
file created with that mode, then renamed), so no other local user can read a token.
A token given explicitly (``Client(token=…)``, ``--token``) or in ``WREG_TOKEN`` wins over
the stored one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)
FILE_MODE = 0o600
DIR_MODE = 0o700


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "wreg" / "credentials.json"


def normalize_url(url: str) -> str:
    """The key a registry's token is stored under: scheme and host lowercased, no
    trailing slash (``HTTP://Host:8080/`` and ``http://host:8080`` are one registry)."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        log.warning("ignoring %s: not valid JSON", path)
        return {}
    return doc if isinstance(doc, dict) else {}


def load_token(url: str) -> str | None:
    """The token stored for ``url``, if any (an unreadable file counts as none)."""
    path = credentials_path()
    try:
        doc = _read(path)
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    entry = (doc.get("registries") or {}).get(normalize_url(url))
    token = entry.get("token") if isinstance(entry, dict) else None
    if token and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by other users: chmod 600 it", path)
    return token if isinstance(token, str) and token else None


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path.parent, DIR_MODE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # O_CREAT's mode is masked by umask, and skipped if it existed
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_token(url: str, token: str) -> Path:
    """Store ``token`` for ``url``; returns the file written."""
    path = credentials_path()
    doc = _read(path)
    registries = doc.get("registries")
    if not isinstance(registries, dict):
        registries = {}
    registries[normalize_url(url)] = {"token": token}
    _write(path, {**doc, "registries": registries})
    return path


def remove_token(url: str) -> bool:
    """Forget the token stored for ``url``; False if there was none."""
    path = credentials_path()
    doc = _read(path)
    registries = doc.get("registries")
    if not isinstance(registries, dict) or normalize_url(url) not in registries:
        return False
    del registries[normalize_url(url)]
    _write(path, {**doc, "registries": registries})
    return True
