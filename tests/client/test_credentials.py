"""Stored tokens (``wreg/_credentials.py``) and which token ``wreg.Client`` uses."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import wreg
from wreg import _credentials
from wreg.core.errors import AuthError, ErrorCode, error_class_for


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("WREG_TOKEN", raising=False)
    return tmp_path / "config"


def test_save_load_remove(config_home: Path) -> None:
    path = _credentials.save_token("HTTP://Reg.Example:8080/", "wreg_one")
    assert path == config_home / "wreg" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    _credentials.save_token("http://other:1", "wreg_two")
    assert _credentials.load_token("http://reg.example:8080") == "wreg_one"
    assert _credentials.load_token("http://other:1/") == "wreg_two"
    assert _credentials.load_token("http://unknown") is None
    assert _credentials.remove_token("http://reg.example:8080")
    assert not _credentials.remove_token("http://reg.example:8080")
    assert _credentials.load_token("http://reg.example:8080") is None
    assert _credentials.load_token("http://other:1") == "wreg_two"


def test_corrupt_file_counts_as_no_token(config_home: Path) -> None:
    (config_home / "wreg").mkdir(parents=True)
    (config_home / "wreg" / "credentials.json").write_text("{not json")
    assert _credentials.load_token("http://x") is None


def test_client_token_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    _credentials.save_token("http://reg:1", "wreg_stored")
    assert wreg.Client("http://reg:1").token == "wreg_stored"  # noqa: S105 - a made-up token under test
    assert wreg.Client("http://elsewhere:1").token is None
    monkeypatch.setenv("WREG_TOKEN", "wreg_env")
    assert wreg.Client("http://reg:1").token == "wreg_env"  # noqa: S105 - a made-up token under test
    assert wreg.Client("http://reg:1", "wreg_arg").token == "wreg_arg"  # noqa: S105 - a made-up token under test


def test_auth_codes_map_to_auth_error() -> None:
    assert error_class_for(ErrorCode.UNAUTHORIZED) is AuthError
    assert error_class_for(ErrorCode.DENIED) is AuthError
    assert issubclass(wreg.AuthError, wreg.WregError)
