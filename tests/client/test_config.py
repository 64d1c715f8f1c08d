"""``WREG_*`` client settings: parsed as pydantic-settings parsed them, and a bad value is
one line naming its variable (in the API and at the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wreg._config import (
    DEFAULT_URL,
    ClientSettings,
    SettingsError,
    default_inflight_bytes,
    memory_limit,
)
from wreg.cli import app


def test_defaults() -> None:
    s = ClientSettings.from_env({})
    assert s == ClientSettings()
    assert (s.url, s.token, s.concurrency, s.timeout) == (DEFAULT_URL, None, 16, 60.0)
    assert (s.inflight_bytes, s.offline, s.cache_shared) == (128 << 20, False, "auto")
    assert s.cache == Path.home() / ".cache" / "wreg"
    assert s.trusted_uids == []


def test_values_parse_as_before() -> None:
    s = ClientSettings.from_env(
        {
            "WREG_URL": "https://r.example",
            "WREG_TOKEN": "wreg_x",
            "WREG_CACHE": "/srv/wreg-cache",
            "WREG_CONCURRENCY": " 2.0 ",
            "WREG_TIMEOUT": "1e3",
            "WREG_INFLIGHT_BYTES": "16_777_216",
            "WREG_OFFLINE": "Yes",
            "WREG_CACHE_SHARED": "group",
            "WREG_CACHE_TRUSTED_UIDS": "1001, 1002",
            "WREG_UNRELATED": "ignored",
            "HOME_URL": "ignored",
        }
    )
    assert (s.url, s.token, s.cache) == ("https://r.example", "wreg_x", Path("/srv/wreg-cache"))
    assert (s.concurrency, s.timeout, s.inflight_bytes) == (2, 1000.0, 16 << 20)
    assert (s.offline, s.cache_shared, s.trusted_uids) == (True, "group", [1001, 1002])


def test_names_are_case_insensitive_and_upper_case_wins() -> None:
    assert ClientSettings.from_env({"wreg_concurrency": "7"}).concurrency == 7
    both = {"wreg_url": "http://lower", "WREG_URL": "http://upper"}
    assert ClientSettings.from_env(both).url == "http://upper"
    assert ClientSettings.from_env(dict(reversed(both.items()))).url == "http://upper"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("WREG_CONCURRENCY", "0"),
        ("WREG_CONCURRENCY", "257"),
        ("WREG_CONCURRENCY", "2.5"),
        ("WREG_CONCURRENCY", ""),
        ("WREG_TIMEOUT", "0"),
        ("WREG_TIMEOUT", "nan"),
        ("WREG_TIMEOUT", "soon"),
        ("WREG_INFLIGHT_BYTES", str((8 << 20) - 1)),
        ("WREG_OFFLINE", "maybe"),
        ("WREG_CACHE_SHARED", "GROUP"),
        ("WREG_CACHE_TRUSTED_UIDS", "alice"),
    ],
)
def test_bad_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        ClientSettings.from_env({var: value})
    message = str(info.value)
    assert message.startswith(f"{var}=")
    assert "\n" not in message
    assert isinstance(info.value, ValueError)  # as pydantic's ValidationError was


def test_cli_reports_a_bad_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WREG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WREG_CONCURRENCY", "0")
    result = CliRunner().invoke(app, ["ls", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2  # a wrong configuration, as a wrong command line
    assert result.output == "error: WREG_CONCURRENCY='0': expected an integer from 1 to 256\n"


def test_the_client_never_imports_pydantic_settings() -> None:
    import subprocess
    import sys

    code = (
        "import sys, wreg, wreg.cli, wreg._client, wreg._config\n"
        "wreg._config.ClientSettings.from_env()\n"
        "assert 'pydantic_settings' not in sys.modules, 'pydantic_settings imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603 - our own code


def _cgroup(tmp_path: Path, lines: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    proc.write_text(lines)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return proc, root


def test_memory_limit_reads_cgroup_v2_and_takes_the_smallest_on_the_path(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "cgroup.controllers": "cpu memory\n",
            "kubepods/memory.max": "8589934592\n",
            "kubepods/pod1/memory.max": "1073741824\n",
            "kubepods/pod1/ctr/memory.max": "max\n",
        },
    )
    assert memory_limit(proc, root) == 1 << 30
    assert default_inflight_bytes(1 << 30) == 128 << 20
    assert default_inflight_bytes(256 << 20) == 32 << 20  # a small container: an eighth
    assert default_inflight_bytes(32 << 20) == 8 << 20  # never below the minimum
    assert default_inflight_bytes(64 << 30) == 1 << 30  # a large one: more in flight, capped


def test_memory_limit_reads_cgroup_v1_and_ignores_no_limit(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path,
        "4:memory:/docker/abc\n1:cpu:/\n",
        {
            "memory/docker/abc/memory.limit_in_bytes": "536870912\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
        },
    )
    assert memory_limit(proc, root) == 512 << 20
    (tmp_path / "u").mkdir()
    unlimited, root2 = _cgroup(
        tmp_path / "u", "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n"}
    )
    assert memory_limit(unlimited, root2) is None
    assert memory_limit(tmp_path / "missing", root) is None


def test_an_explicit_inflight_bytes_wins_over_the_cgroup_default() -> None:
    assert (
        ClientSettings.from_env({"WREG_INFLIGHT_BYTES": str(64 << 20)}).inflight_bytes == 64 << 20
    )
