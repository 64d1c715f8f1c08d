"""``wreg``'s failures as a user and a script meet them: every exit status the CLI
documents (0, 1, 2, 130), the error envelope ``--json`` prints on stdout for every
command, and the hints for common mistakes (``team/model:v1``, a URL ending in ``/v1``,
an unknown tag). Against real ``wreg-server`` processes on 127.0.0.1 (one with auth on)
holding the real MiniLM model.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.commands import BIN, run, wreg
from wreg import Client
from wreg.core.errors import ErrorCode
from wreg.testing.procs import free_port
from wreg.testing.realdata import base_model, variant
from wreg.testing.servers import RunningServer, start_server

REPO = "cli-errors/model"
MANY = "cli-errors/many"
MANY_TAGS = [f"t{i:02d}" for i in range(13)]


@pytest.fixture(scope="module")
def pushed(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The real model as ``REPO@v1``, its fine-tune as ``REPO@v2``; ``MANY`` with 13 tags
    (moved through the registry's tag API) on the model. Tag name -> manifest digest."""
    cache = tmp_path_factory.mktemp("push-cache")
    client = Client(server.url, cache_dir=cache)
    v1 = client.push(base_model(), f"{REPO}@v1").manifest
    v2 = client.push(variant("finetune"), f"{REPO}@v2").manifest
    client.push(base_model(), f"{MANY}@{MANY_TAGS[0]}")
    for tag in MANY_TAGS[1:]:
        answer = httpx.put(f"{server.url}/v1/repositories/{MANY}/tags/{tag}", json={"digest": v1})
        assert answer.status_code < 300, answer.text
    return {"v1": v1, "v2": v2}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("auth-server")
    server = start_server(root / "data", {"WREG_AUTH": "on", "WREG_AUTH_CACHE_SECONDS": "0"})
    yield server
    server.stop()


@pytest.fixture
def env(client_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``client_env`` without a token or stray settings, with its own config directory."""
    base = {k: v for k, v in client_env.items() if not k.startswith("WREG_")}
    return base | {
        "WREG_URL": client_env["WREG_URL"],
        "WREG_CACHE": client_env["WREG_CACHE"],
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


def failed(
    out: subprocess.CompletedProcess[str], status: int, code: ErrorCode, *needles: str
) -> dict[str, Any]:
    """``out`` (run with ``--json``) failed with exit ``status``: its stdout is exactly the
    registry's error envelope with ``code``, its stderr the same message on one
    ``error: `` line, no traceback; each needle is in the message. Returns the error."""
    assert out.returncode == status, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    doc = json.loads(out.stdout)
    assert list(doc) == ["errors"], doc
    assert len(doc["errors"]) == 1, doc
    error: dict[str, Any] = doc["errors"][0]
    assert set(error) == {"code", "message", "detail"}, error
    assert error["code"] == code.name, error
    assert error["code"] in ErrorCode.__members__  # the one table
    # ``error: ...`` (click's ``Error: ...`` under the usage lines for a wrong command line)
    last = out.stderr.strip().splitlines()[-1]
    assert last in (f"error: {error['message']}", f"Error: {error['message']}"), out.stderr
    for needle in needles:
        assert needle in error["message"], error["message"]
    return error


def one_line(out: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    """``out`` (without ``--json``) failed with ``status``, one ``error: `` line on stderr
    naming every needle, nothing on stdout."""
    assert out.returncode == status, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: "), out.stderr
    assert "internal error" not in lines[0], out.stderr
    assert out.stdout == "", out.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- exit status 0 and 1 ------------------------------------------------------------


def test_success_is_0_and_a_failure_is_1(pushed: dict[str, str], env: dict[str, str]) -> None:
    out = wreg("ls", REPO, "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert {t["tag"]: t["digest"] for t in json.loads(out.stdout)["tags"]} == pushed
    one_line(wreg("pull", "cli-errors/nothing-here", env=env), 1, "is unknown")
    one_line(wreg("ls", "--url", f"http://127.0.0.1:{free_port()}", env=env), 1, "cannot reach")


def test_cache_warm_exits_1_when_a_reference_fails_and_still_pulls_the_rest(
    pushed: dict[str, str], env: dict[str, str]
) -> None:
    out = wreg("cache", "warm", f"{REPO}@v1", f"{REPO}@v404", "--json", env=env)
    assert out.returncode == 1, out.stderr
    results = {r["reference"]: r for r in json.loads(out.stdout)["results"]}
    assert results[f"{REPO}@v1"]["ok"]
    assert results[f"{REPO}@v1"]["manifest"] == pushed["v1"]
    assert not results[f"{REPO}@v404"]["ok"]
    assert "internal error" not in out.stderr


# -- exit status 2: the command line or the configuration --------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["pull"], "Missing argument 'REF'"),
        (["pull", "x", "--no-such-option"], "No such option: --no-such-option"),
        (["pull", "x", "--link", "bogus"], "'bogus' is not one of"),
        (["no-such-command"], "No such command"),
    ],
)
def test_a_wrong_command_line_is_2_and_json_gets_the_envelope(
    env: dict[str, str], args: list[str], needle: str
) -> None:
    out = wreg(*args, env=env)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert out.stdout == ""
    error = failed(wreg(*args, "--json", env=env), 2, ErrorCode.USAGE_INVALID, needle)
    assert error["detail"] is None


def test_cache_warm_without_references_is_2_not_an_internal_error(env: dict[str, str]) -> None:
    one_line(wreg("cache", "warm", env=env), 2, "no references given")
    failed(wreg("cache", "warm", "--json", env=env), 2, ErrorCode.USAGE_INVALID, "no references")


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("WREG_CONCURRENCY", "abc", "expected an integer from 1 to 256"),
        ("WREG_CONCURRENCY", "0", "expected an integer from 1 to 256"),
        ("WREG_TIMEOUT", "soon", "expected a number of seconds above 0"),
        ("WREG_OFFLINE", "maybe", "expected a boolean"),
        ("WREG_INFLIGHT_BYTES", "1k", "expected an integer number of bytes, at least"),
        ("WREG_CACHE_SHARED", "everyone", "expected one of auto, group, private"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(
    pushed: dict[str, str], env: dict[str, str], var: str, value: str, expected: str
) -> None:
    bad = env | {var: value}
    line = one_line(wreg("ls", env=bad), 2, f"{var}={value!r}: {expected}")
    assert "pydantic" not in line
    assert "validation error" not in line
    for args in (["ls"], ["inspect", f"{REPO}@v1"], ["cache", "ls"], ["cache", "verify"]):
        error = failed(wreg(*args, "--json", env=bad), 2, ErrorCode.SETTING_INVALID, expected)
        assert error["detail"]["variable"] == var
        assert error["detail"]["value"] == value
        assert expected.removeprefix("expected ") in error["detail"]["expected"]


def test_a_registry_url_ending_in_v1_is_refused_with_its_root(
    server: RunningServer, pushed: dict[str, str], env: dict[str, str]
) -> None:
    for url in (f"{server.url}/v1", f"{server.url}/v1/"):
        line = one_line(wreg("pull", f"{REPO}@v1", "--url", url, env=env), 2, "without /v1")
        assert f"'{server.url}'" in line  # the root to use instead
        assert REPO not in line  # not blamed on the model
        failed(
            wreg("ls", "--json", env=env | {"WREG_URL": url}),
            2,
            ErrorCode.SETTING_INVALID,
            "WREG_URL",
            "root URL",
        )
    # Another path in front of the API: the registry's 404 asks whether it is the root.
    error = failed(
        wreg("ls", "--url", f"{server.url}/api", "--json", env=env),
        1,
        ErrorCode.NOT_FOUND,
        f"is {server.url}/api the registry's root URL?",
    )
    assert "no such endpoint" in error["message"]


# -- exit status 130 ---------------------------------------------------------------


def test_an_interrupt_is_130_in_one_line(env: dict[str, str]) -> None:
    """Ctrl-C while ``wreg`` waits on a registry that accepted the connection and says
    nothing: ``interrupted``, status 130, no traceback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(60)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        # Through a shim that gives SIGINT its default action before exec'ing wreg: a
        # run started in the background (`make test &`, nohup, some CI runners) ignores
        # SIGINT, an ignored signal stays ignored across exec, and Python then installs no
        # KeyboardInterrupt handler (as it should: the shell asked for the signal to be
        # ignored). A terminal's Ctrl-C reaches a process with the default action.
        shim = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); " + (
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        proc = subprocess.Popen(  # noqa: S603 - this venv's wreg, arguments from the test
            [sys.executable, "-c", shim, str(BIN / "wreg"), "ls", "--url", url],
            env=env | {"WREG_TIMEOUT": "120"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            connection, _ = listener.accept()  # wreg is now waiting for an answer
            with connection:
                proc.send_signal(signal.SIGINT)
                stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, (proc.returncode, stdout, stderr)
    assert stderr.strip() == "interrupted", stderr
    assert "Traceback" not in stderr


# -- --json covers failures, for every command -------------------------------------


def test_every_command_with_json_prints_the_envelope_on_failure(
    server: RunningServer, pushed: dict[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases: list[tuple[list[str], ErrorCode, str]] = [
        (["push", str(tmp_path / "missing"), "x/y@v1"], ErrorCode.LOCAL_PATH_MISSING, "missing"),
        (["push", str(empty), "x/y@v1"], ErrorCode.LOCAL_EMPTY, "no files"),
        (["push", str(base_model()), "x/y@v1", "--url", unreachable], ErrorCode.UNAVAILABLE, ""),
        (["import-hf", str(empty), "x/y@v1"], ErrorCode.LOCAL_EMPTY, "no files"),
        (["pull", "cli-errors/unknown@v1"], ErrorCode.NAME_UNKNOWN, "cli-errors/unknown"),
        (["pull", f"{REPO}@v404"], ErrorCode.TAG_UNKNOWN, "v404"),
        (["pull", f"{REPO}@v1", "--url", unreachable], ErrorCode.UNAVAILABLE, "cannot reach"),
        (["pull", f"{REPO}@v1", "--offline"], ErrorCode.NOT_CACHED, ""),
        (["pull", f"{REPO}@v1", "--tensors", "x.*"], ErrorCode.SELECTION_INVALID, "-o DIR"),
        (["ls", "cli-errors/unknown"], ErrorCode.NAME_UNKNOWN, "cli-errors/unknown"),
        (["ls", "Bad"], ErrorCode.NAME_INVALID, "invalid repository name"),
        (["ls", "--url", unreachable], ErrorCode.UNAVAILABLE, "cannot reach"),
        (["rm", f"{REPO}@v404"], ErrorCode.TAG_UNKNOWN, "v404"),
        (["inspect", f"{REPO}@v404"], ErrorCode.TAG_UNKNOWN, "v404"),
        (["diff", f"{REPO}@v1", "cli-errors/unknown@v1"], ErrorCode.NAME_UNKNOWN, "unknown"),
        (["cache", "pin", f"{REPO}@v1"], ErrorCode.NOT_CACHED, ""),
        (["cache", "unpin", f"{REPO}@v1"], ErrorCode.NOT_CACHED, ""),
        (["cache", "prune", "--max-size", "lots"], ErrorCode.SIZE_INVALID, "lots"),
        (
            ["cache", "warm", "--from", str(tmp_path / "no-list.txt")],
            ErrorCode.LOCAL_IO_FAILED,
            "no-list.txt",
        ),
    ]
    for args, code, needle in cases:
        failed(wreg(*args, "--json", env=env), 1, code, needle)
    # Nothing half-done reached the registry.
    listed = json.loads(wreg("ls", "--json", env=env).stdout)["repositories"]
    assert "x/y" not in [r["name"] for r in listed]


def test_a_token_the_registry_rejects_is_an_auth_error_in_json(
    auth_server: RunningServer, env: dict[str, str], tmp_path: Path
) -> None:
    bad = "wreg_" + "0" * 43
    secured = env | {"WREG_URL": auth_server.url}
    error = failed(wreg("ls", "--token", bad, "--json", env=secured), 1, ErrorCode.UNAUTHORIZED)
    assert error["message"]
    failed(
        wreg("pull", "a/b@v1", "--json", env=secured | {"WREG_TOKEN": bad}),
        1,
        ErrorCode.UNAUTHORIZED,
    )
    # login makes one authenticated request, refuses the token and saves nothing.
    out = run("wreg", "login", "--json", env=secured, stdin=bad + "\n")
    failed(out, 1, ErrorCode.UNAUTHORIZED)
    assert not (tmp_path / "config" / "wreg" / "credentials.json").exists()
    out = run("wreg", "login", env=secured, stdin="\n")
    one_line(out, 2, "no token given")
    assert not (tmp_path / "config").exists()


# -- hints -------------------------------------------------------------------------


def test_a_colon_reference_suggests_the_at_form(
    pushed: dict[str, str], env: dict[str, str]
) -> None:
    for args in (["pull", f"{REPO}:v1"], ["inspect", f"{REPO}:v1"], ["rm", f"{REPO}:v1"]):
        one_line(wreg(*args, env=env), 1, f"did you mean '{REPO}@v1'?")
    error = failed(
        wreg("push", str(base_model()), f"{REPO}:v9", "--json", env=env),
        1,
        ErrorCode.REFERENCE_INVALID,
        f"did you mean '{REPO}@v9'?",
    )
    assert error["detail"] == {"reference": f"{REPO}:v9", "suggestion": f"{REPO}@v9"}
    digest = pushed["v1"]
    one_line(wreg("pull", f"{REPO}:{digest}", env=env), 1, f"did you mean '{REPO}@{digest}'?")
    # The tag was not moved by the refused push.
    tags = json.loads(wreg("ls", REPO, "--json", env=env).stdout)["tags"]
    assert [t["tag"] for t in tags] == ["v1", "v2"]


def test_an_unknown_tag_lists_the_existing_ones(
    pushed: dict[str, str], env: dict[str, str]
) -> None:
    line = one_line(wreg("pull", f"{REPO}@v3", env=env), 1, "tag 'v3' is unknown")
    assert "its tags: v1, v2" in line
    error = failed(wreg("inspect", f"{REPO}@v3", "--json", env=env), 1, ErrorCode.TAG_UNKNOWN)
    assert error["detail"]["tags"] == ["v1", "v2"]
    assert error["detail"]["tags_total"] == 2
    # Many tags: the first ten, then how many more.
    line = one_line(wreg("pull", f"{MANY}@nope", env=env), 1)
    assert f"its tags: {', '.join(MANY_TAGS[:10])} and 3 more" in line
    error = failed(wreg("rm", f"{MANY}@nope", "--json", env=env), 1, ErrorCode.TAG_UNKNOWN)
    assert error["detail"]["tags"] == MANY_TAGS[:10]
    assert error["detail"]["tags_total"] == len(MANY_TAGS)
