"""Auth end to end: ``wreg-server token create --json`` → ``wreg login`` → push/pull against a
real ``wreg-server serve`` with ``WREG_AUTH=on``; the credentials file; ``WREG_TOKEN``."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.commands import run
from wreg.testing.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("auth-server")
    server = start_server(root / "data", {"WREG_AUTH": "on", "WREG_AUTH_CACHE_SECONDS": "0"})
    yield server
    server.stop()


def create_token(server: RunningServer, name: str, *scopes: str) -> str:
    args = [a for s in scopes for a in ("--scope", s)]
    env = os.environ | {"WREG_DATA": str(server.data)}
    out = run("wreg-server", "token", "create", name, *args, "--json", env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["name"] == name
    assert doc["scopes"] == list(scopes)
    token: str = doc["token"]
    assert token.startswith("wreg_")
    return token


@pytest.fixture
def env(auth_server: RunningServer, tmp_path: Path) -> dict[str, str]:
    """A user with their own config dir and node cache, no token in the environment."""
    base = {k: v for k, v in os.environ.items() if k != "WREG_TOKEN"}
    return base | {
        "WREG_URL": auth_server.url,
        "WREG_CACHE": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


def model(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "weights.bin").write_bytes(os.urandom(200_000))
    (path / "config.json").write_text('{"layers": 2}')
    return path


def test_token_login_push_pull(
    auth_server: RunningServer, env: dict[str, str], tmp_path: Path
) -> None:
    src = model(tmp_path, "m")
    # No token yet: a clear one-line 401.
    out = run("wreg", "push", str(src), "team-a/m@v1", env=env)
    assert out.returncode == 1
    assert "wreg login" in out.stderr
    assert "Traceback" not in out.stderr

    token = create_token(auth_server, "e2e-pusher", "push:team-a/*")
    # A wrong token is refused and not saved.
    out = run("wreg", "login", "--token", "wreg_" + "0" * 43, env=env)
    assert out.returncode == 1, out.stdout
    credentials = tmp_path / "config" / "wreg" / "credentials.json"
    assert not credentials.exists()

    out = run("wreg", "login", "--json", env=env, stdin=token + "\n")  # token on stdin
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == "e2e-pusher"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.parent.stat().st_mode) == 0o700
    assert json.loads(credentials.read_text())["registries"][auth_server.url]["token"] == token

    out = run("wreg", "push", str(src), "team-a/m@v1", "--json", env=env)
    assert out.returncode == 0, out.stderr
    out = run("wreg", "pull", "team-a/m@v1", "-o", str(tmp_path / "out"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()

    # Outside the token's glob: 403, one line.
    out = run("wreg", "push", str(src), "team-b/m@v1", env=env)
    assert out.returncode == 1, out.stderr
    assert "may not push" in out.stderr, out.stderr

    # WREG_TOKEN overrides the stored token (here: a pull-only token cannot push).
    reader = create_token(auth_server, "e2e-reader", "pull:*")
    out = run("wreg", "push", str(src), "team-a/m@v2", env=env | {"WREG_TOKEN": reader})
    assert out.returncode == 1, out.stderr
    assert "e2e-reader" in out.stderr, out.stderr
    out = run("wreg", "ls", "--json", env=env | {"WREG_TOKEN": reader})
    assert out.returncode == 0, out.stderr
    # --token overrides both.
    out = run(
        "wreg", "push", str(src), "team-a/m@v2", "--token", token, env=env | {"WREG_TOKEN": reader}
    )
    assert out.returncode == 0, out.stderr

    # Revoked (server-side, while the server runs): 401 at once (cache off here).
    out = run(
        "wreg-server",
        "token",
        "revoke",
        "e2e-pusher",
        env=os.environ | {"WREG_DATA": str(auth_server.data)},
    )
    assert out.returncode == 0, out.stderr
    out = run("wreg", "pull", "team-a/m@v1", env=env)
    assert out.returncode == 1, out.stderr
    assert "revoked" in out.stderr, out.stderr

    out = run("wreg", "logout", env=env)
    assert out.returncode == 0
    assert "logged out" in out.stdout
    assert auth_server.url not in json.loads(credentials.read_text())["registries"]


def test_token_list_and_errors(auth_server: RunningServer) -> None:
    env = os.environ | {"WREG_DATA": str(auth_server.data)}
    create_token(auth_server, "listed", "pull:team-a/*", "push:team-b/*")
    out = run("wreg-server", "token", "list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    listed = {t["name"]: t for t in json.loads(out.stdout)["tokens"]}
    assert listed["listed"]["scopes"] == ["pull:team-a/*", "push:team-b/*"]
    assert "token" not in listed["listed"]
    out = run("wreg-server", "token", "create", "listed", "--scope", "pull:*", env=env)
    assert out.returncode == 1
    assert "exists" in out.stderr
    out = run("wreg-server", "token", "create", "bad", "--scope", "write:*", env=env)
    assert out.returncode == 1
    assert "invalid scope" in out.stderr
    out = run("wreg-server", "token", "revoke", "nobody", env=env)
    assert out.returncode == 1
    assert "nobody" in out.stderr
