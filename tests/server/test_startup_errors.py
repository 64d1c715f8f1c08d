"""``wreg-server``'s start-up and configuration errors, and its exit codes, as a newcomer
meets them: real ``wreg-server`` processes, their stderr and exit status.

A setting, data directory, log level or port it cannot use is one line on stderr naming
the setting and what it accepts, exit status 2, no traceback. Admin commands (``gc``,
``verify``, ``token``, ``retention``) never invent an empty index where they find none,
and a client-only install says which extra to install. The exit codes (README,
"``wreg-server``"): 0 done, 1 the command's work failed (a token or policy refused;
``verify`` found damage: tests/server/test_scrub.py), 2 configuration or usage, 3 ``serve``
could not start (uvicorn's code: here, a port already taken).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from wreg.testing.procs import LOCALHOST, free_port
from wreg.testing.servers import run_wreg_server, start_server, wreg_server_command

# Settings the tests must not inherit from whoever runs them.
_OURS = ("WREG_DATA", "WREG_DATABASE_URL", "WREG_STORE", "WREG_STORE_PATH", "WREG_LOG_FORMAT")


def wreg_server(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``wreg-server ARGS`` run in ``cwd`` with no WREG_* setting but ``env``'s."""
    base = {k: v for k, v in os.environ.items() if k not in _OURS}
    return subprocess.run(  # noqa: S603 - our own command
        [*wreg_server_command(), *args],
        cwd=cwd,
        env=base | dict(env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Assert ``done`` exited 2 with one ``error: …`` line naming each of ``expected``."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    (line,) = lines
    assert line.startswith("error: "), line
    for part in expected:
        assert part in line, (part, line)
    return line


# -- serve: the data directory, log level, port ---------------------------------------


def test_serve_refuses_a_data_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    done = wreg_server("serve", "--data", "data", cwd=tmp_path)
    one_line_error(done, "data directory", "--data", "it is a file", "writable directory")


def test_serve_refuses_a_data_directory_it_cannot_create(tmp_path: Path) -> None:
    """Under a regular file nobody can create a directory, root included (CI runs as root,
    for whom a read-only directory is writable)."""
    (tmp_path / "file").write_text("x")
    done = wreg_server("serve", "--data", str(tmp_path / "file" / "data"), cwd=tmp_path)
    one_line_error(done, "data directory", str(tmp_path / "file" / "data"), "Not a directory")


def test_serve_refuses_an_object_store_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    env = {"WREG_STORE_PATH": str(tmp_path / "file" / "objects")}
    done = wreg_server("serve", "--data", "data", cwd=tmp_path, env=env)
    one_line_error(done, "object store", "WREG_STORE_PATH")


def test_serve_refuses_a_bad_log_level(tmp_path: Path) -> None:
    done = wreg_server("serve", "--data", "data", "--log-level", "loud", cwd=tmp_path)
    one_line_error(done, "--log-level 'loud'", "debug", "info", "warning")
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_serve_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    done = wreg_server("serve", "--data", "data", "--port", "70000", cwd=tmp_path)
    one_line_error(done, "--port 70000", "65535")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WREG_LOG_FORMAT": "xml"}, ["WREG_LOG_FORMAT='xml'", "'text' or 'json'"]),
        ({"WREG_MAX_CONNECTIONS": "abc"}, ["WREG_MAX_CONNECTIONS='abc'", "integer"]),
        ({"WREG_MAX_CHUNK_RAW": "0"}, ["WREG_MAX_CHUNK_RAW=", "greater than 0"]),
        ({"WREG_AUTH": "yes"}, ["WREG_AUTH='yes'", "'on' or 'off'"]),
        ({"WREG_TRUSTED_PROXIES": "10.0.0.0/33"}, ["WREG_TRUSTED_PROXIES='10.0.0.0/33'"]),
        ({"WREG_STORE": "s4"}, ["WREG_STORE='s4'", "file", "memory", "s3"]),
        ({"WREG_STORE": "s3"}, ["WREG_S3_BUCKET"]),
        ({"WREG_DATABASE_URL": "pg://:x@@"}, ["WREG_DATABASE_URL", "postgresql+asyncpg://"]),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    tmp_path: Path, env: dict[str, str], expected: list[str]
) -> None:
    done = wreg_server("serve", "--data", "data", cwd=tmp_path, env=env)
    one_line_error(done, *expected)


def test_a_database_url_it_cannot_parse_is_not_echoed(tmp_path: Path) -> None:
    """The URL may hold a password: the error names the variable, not its value."""
    done = wreg_server("token", "list", cwd=tmp_path, env={"WREG_DATABASE_URL": "s3cr3t@@:x"})
    assert "s3cr3t" not in one_line_error(done, "WREG_DATABASE_URL")


def test_a_bad_gc_grace_is_one_line(tmp_path: Path) -> None:
    one_line_error(wreg_server("gc", "--grace", "soon", cwd=tmp_path), "--grace", "30m")


# -- admin commands never create an index ----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["gc"],
        ["gc", "--dry-run", "--json"],
        ["verify"],
        ["token", "list"],
        ["token", "create", "ci", "--scope", "pull:*"],
        ["token", "revoke", "ci"],
        ["retention", "show"],
        ["retention", "set", "team/m", "--keep", "1", "--match", "step-*"],
        ["retention", "plan", "team/m"],
        ["retention", "clear", "team/m"],
    ],
    ids=" ".join,
)
def test_admin_commands_refuse_to_invent_an_index(tmp_path: Path, args: list[str]) -> None:
    """Without ``--data`` in a directory holding none, an admin command would otherwise
    create ./wreg-data with an empty index and report success on nothing."""
    done = wreg_server(*args, cwd=tmp_path)
    one_line_error(done, "no index at", str(tmp_path / "wreg-data"), "--data", "db upgrade")
    assert list(tmp_path.iterdir()) == []


def test_admin_commands_refuse_an_empty_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "index.sqlite").write_bytes(b"")
    done = wreg_server("token", "list", "--data", "data", cwd=tmp_path)
    one_line_error(done, "no index at")
    assert (tmp_path / "data" / "index.sqlite").read_bytes() == b""  # looked at, not changed


def test_admin_commands_name_an_unreachable_index_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://wreg:hunter2@{LOCALHOST}:{free_port()}/wreg"
    done = wreg_server("token", "list", cwd=tmp_path, env={"WREG_DATABASE_URL": url})
    line = one_line_error(done, "cannot reach the index", "wreg:***@")
    assert "hunter2" not in line


def test_admin_commands_work_on_an_index_db_upgrade_made(tmp_path: Path) -> None:
    assert wreg_server("db", "upgrade", "--data", "data", cwd=tmp_path).returncode == 0
    done = wreg_server("token", "list", "--json", "--data", "data", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"tokens": []}'


def test_db_upgrade_refuses_an_unusable_data_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = wreg_server("db", "upgrade", "--data", str(tmp_path / "file" / "data"), cwd=tmp_path)
    one_line_error(done, "data directory", "Not a directory")


# -- a client-only install -------------------------------------------------------------

# What `pip install wreg` lacks and `pip install 'wreg[server]'` adds (pyproject.toml).
SERVER_EXTRA_MODULES = [
    "pydantic",
    "pydantic_settings",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "alembic",
    "prometheus_client",
    "obstore",
    "jinja2",
    "swagger_ui_bundle",
]

# Runs wreg-server's entry point in a process where the server extra cannot be imported.
_WITHOUT_EXTRA = """
import sys

BLOCKED = set(sys.argv[1].split(","))


class ClientOnlyInstall:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, ClientOnlyInstall())
sys.argv = ["wreg-server", *sys.argv[2:]]
from wreg_server.cli import main

main()
"""


@pytest.mark.parametrize(
    "args", [["serve"], ["db", "upgrade"], ["gc"], ["token", "list"]], ids=" ".join
)
def test_a_client_only_install_names_the_extra(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", _WITHOUT_EXTRA, ",".join(SERVER_EXTRA_MODULES), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    one_line_error(done, "pip install 'wreg[server]'")
    assert list(tmp_path.iterdir()) == []


# -- exit codes 0, 1 and 3 -------------------------------------------------------------


def test_exit_codes_of_a_served_registry(tmp_path: Path) -> None:
    """0: a command that did its work; 1: the command's work failed (a token that does not
    exist); 3: ``serve`` could not start (its port is taken), after uvicorn's one error
    line. (A served registry stopped by a signal shuts down gracefully and exits by it.)"""
    server = start_server(tmp_path / "data")
    try:
        port = server.url.rsplit(":", 1)[1]
        taken = run_wreg_server(
            "serve", "--data", str(tmp_path / "other"), "--host", LOCALHOST, "--port", port
        )
        assert taken.returncode == 3, taken.stderr
        assert "address already in use" in taken.stderr
        created = run_wreg_server(
            "token", "create", "ci", "--scope", "pull:*", "--data", str(server.data)
        )
        assert created.returncode == 0, created.stderr
        missing = run_wreg_server("token", "revoke", "nobody", "--data", str(server.data))
        assert missing.returncode == 1, missing.stderr
        assert missing.stderr.startswith("error: ")
        assert "Traceback" not in missing.stderr
    finally:
        server.stop()
