"""Fault injection on the server side, with real ``wreg-server`` processes on 127.0.0.1
(issue 5, item 3): ``kill -9`` mid-push (SQLite + files and PostgreSQL + S3), a chunk
corrupted in the S3 store, and the index or the store going away and coming back.

The file-store corruption case is ``test_cli.py::
test_corrupt_chunk_on_server_is_refused_and_nothing_is_written``; client-side faults are
in ``test_faults_client.py``.

What the server can and cannot see: it verifies every chunk on upload (decode + digest
before the object becomes visible) but not on download — it serves the stored encoded
bytes as they are (and with S3 redirects it never sees them), so a chunk corrupted at
rest is caught by the client, which verifies every chunk and file before writing it
under a final name. The tests below pin that down.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.commands import one_line_error, wreg
from tests.e2e.faults import FaultProxy, fault_proxy, tcp_switch
from tests.services.moto import MotoS3
from tests.services.postgres import PostgresServer
from wreg import Client
from wreg._cache import content_matches
from wreg.core.manifest import Manifest
from wreg.testing.servers import RunningServer, start_server, upgrade_database
from wreg_server.domain.layout import chunk_key

MiB = 1 << 20


def make_model(root: Path, files: int, size: int) -> Path:
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"w{i}.bin").write_bytes(os.urandom(size))
    (root / "config.json").write_text(json.dumps({"n": files}))
    return root


def assert_same(model: Path, out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in model.iterdir())
    for p in model.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name


@dataclass
class Backend:
    """How to start (and restart) a server on one deployment's index and store."""

    kind: str
    root: Path
    env: dict[str, str]

    def start(self) -> RunningServer:
        return start_server(self.root / "data", self.env)


@pytest.fixture(params=["sqlite-file", "postgres-s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite-file":
        yield Backend(request.param, tmp_path, {})
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    database = postgres.create_database()
    env = moto.env(moto.create_bucket()) | {"WREG_DATABASE_URL": postgres.url(database)}
    upgrade_database(tmp_path / "migrate", env)
    try:
        yield Backend(request.param, tmp_path, env)
    finally:
        postgres.drop_database(database)


def test_server_kill9_mid_push_commits_nothing_and_repush_sends_only_the_rest(
    backend: Backend, tmp_path: Path
) -> None:
    model = make_model(tmp_path / "model", files=3, size=4 * MiB)  # about 12 chunks
    server = backend.start()
    killed_at = 4

    def kill_after_some(p: FaultProxy) -> None:
        if len(p.acked_puts) == killed_at:
            os.kill(server.process.pid, signal.SIGKILL)

    try:
        with fault_proxy(server.url) as first:
            first.on_put = kill_after_some
            env = os.environ | {
                "WREG_URL": first.url,
                "WREG_CACHE": str(tmp_path / "cache"),
                "WREG_CONCURRENCY": "2",
            }
            one_line_error(wreg("push", str(model), "crash/model@v1", env=env), first.url)
        assert server.process.wait(10) == -signal.SIGKILL
        assert len(first.acked_puts) >= killed_at

        server = backend.start()  # same index and store, after the crash
        repos = httpx.get(f"{server.url}/v1/repositories", timeout=10).json()["repositories"]
        assert "crash/model" not in {r["name"] for r in repos}
        r = httpx.get(f"{server.url}/v1/repositories/crash/model/manifests/v1", timeout=10)
        assert r.status_code == 404, r.text

        with fault_proxy(server.url) as second:
            env["WREG_URL"] = second.url
            out = wreg("push", str(model), "crash/model@v1", "--json", env=env)
        assert out.returncode == 0, out.stderr
        pushed = json.loads(out.stdout)
        # Only what the crashed server had not acknowledged goes again.
        assert not set(second.acked_puts) & set(first.acked_puts)
        everything = first.acked_puts | second.acked_puts
        assert pushed["chunks_new"] == len(second.acked_puts) < pushed["chunks_total"]
        assert pushed["bytes_sent"] == sum(second.acked_puts.values())
        assert pushed["bytes_sent"] <= sum(everything.values()) - sum(first.acked_puts.values())
        # A chunk the server stored just before dying may never have been acknowledged
        # to the proxy; the re-push then finds it present and sends nothing for it.
        assert len(everything) <= pushed["chunks_total"]

        pulled = Client(server.url, cache_dir=tmp_path / "pull-cache").pull(
            "crash/model@v1", tmp_path / "out"
        )
        assert pulled.manifest == pushed["manifest"]
        assert_same(model, tmp_path / "out")
    finally:
        server.stop()


@pytest.mark.parametrize("redirect", [False, True], ids=["streamed", "redirect"])
def test_chunk_corrupted_in_s3_is_refused_and_never_written(
    postgres: PostgresServer, moto_s3: MotoS3, tmp_path: Path, redirect: bool
) -> None:
    database = postgres.create_database()
    bucket = moto_s3.create_bucket()
    env = moto_s3.env(bucket, redirect=redirect) | {"WREG_DATABASE_URL": postgres.url(database)}
    upgrade_database(tmp_path / "migrate", env)
    server = start_server(tmp_path / "data", env)
    try:
        model = make_model(tmp_path / "model", files=1, size=2 * MiB)
        client = Client(server.url, cache_dir=tmp_path / "pusher")
        pushed = client.push(model, "rot/model@v1")
        manifest = Manifest.from_json_bytes(
            httpx.get(f"{server.url}/v1/repositories/rot/model/manifests/v1", timeout=10).content
        )
        victim = next(f for f in manifest.files if f.path == "w0.bin").chunks[-1].digest

        async def tamper() -> bytes:
            store = moto_s3.store(bucket)
            try:
                blob = bytearray(await store.get(chunk_key(victim)))
                blob[-1] ^= 0xFF
                await store.put(chunk_key(victim), bytes(blob))
                return bytes(blob)
            finally:
                await store.close()

        tampered = asyncio.run(tamper())
        if not redirect:  # the server serves what it stored, unchecked (see the docstring)
            chunks = f"{server.url}/v1/repositories/rot/model/chunks"
            r = httpx.get(f"{chunks}/{victim}", timeout=10)
            assert (r.status_code, r.content) == (200, tampered)

        cache, dest = tmp_path / "cache", tmp_path / "out"
        env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(cache)}
        out = wreg("pull", "rot/model@v1", "-o", str(dest), env=env)
        one_line_error(out, "does not match its digest", victim)
        assert not (dest / "w0.bin").exists()
        w0 = next(f for f in manifest.files if f.path == "w0.bin")
        assert not (cache / "blobs" / w0.digest[7:]).exists()
        for blob in (cache / "blobs").iterdir():  # whatever did arrive (config.json) is right
            entry = next(f for f in manifest.files if f.digest == f"blake3:{blob.name}")
            assert content_matches(blob, blob.name, entry.chunks), blob.name
        assert pushed.manifest == manifest.digest
    finally:
        server.stop()
        postgres.drop_database(database)


def _status(r: httpx.Response) -> tuple[int, str]:
    if r.status_code < 400:
        return r.status_code, ""
    try:
        code = r.json()["errors"][0]["code"]
    except (ValueError, KeyError, IndexError):
        code = r.text[:200]
    return r.status_code, code


def _probe(url: str, manifest: Manifest) -> dict[str, tuple[int, str]]:
    """One request of each kind a client makes, and how each was answered."""
    chunk = manifest.files[0].chunks[0].digest
    with httpx.Client(base_url=url, timeout=60) as http:
        return {
            "readyz": _status(http.get("/readyz")),
            "repositories": _status(http.get("/v1/repositories")),
            "manifest": _status(http.get("/v1/repositories/down/model/manifests/v1")),
            "missing": _status(
                http.post("/v1/repositories/down/model/chunks/missing", json={"digests": [chunk]})
            ),
            "chunk": _status(http.get(f"/v1/repositories/down/model/chunks/{chunk}")),
        }


@pytest.mark.parametrize("which", ["database", "store"])
def test_backend_down_answers_503_unavailable_and_recovers(
    postgres: PostgresServer, moto_s3: MotoS3, tmp_path: Path, which: str
) -> None:
    """The index (PostgreSQL) or the store (S3) goes off the network, then comes back.

    A ``TcpSwitch`` stands between the server and the backend, so the session's shared
    PostgreSQL cluster and moto server keep running for everyone else; off, its port
    refuses connections and every open connection is reset.
    """
    database = postgres.create_database()
    bucket = moto_s3.create_bucket()
    moto_port = int(moto_s3.endpoint.rsplit(":", 1)[1])
    up_port = postgres.port if which == "database" else moto_port
    with tcp_switch("127.0.0.1", up_port) as switch:
        pg_url = postgres.url(database)
        s3_env = moto_s3.env(bucket)
        if which == "database":
            pg_url = pg_url.replace(f":{postgres.port}/", f":{switch.port}/")
        else:
            s3_env["WREG_S3_ENDPOINT"] = f"http://127.0.0.1:{switch.port}"
        env = s3_env | {"WREG_DATABASE_URL": pg_url}
        upgrade_database(tmp_path / "migrate", env)
        server = start_server(tmp_path / "data", env)
        try:
            model = make_model(tmp_path / "model", files=1, size=MiB)
            client = Client(server.url, cache_dir=tmp_path / "pusher")
            pushed = client.push(model, "down/model@v1")
            manifest = Manifest.from_json_bytes(
                httpx.get(f"{server.url}/v1/repositories/down/model/manifests/v1").content
            )
            assert pushed.manifest == manifest.digest
            assert set(_probe(server.url, manifest).values()) == {(200, "")}

            switch.off()
            down = _probe(server.url, manifest)
            needs_backend = (
                {"readyz", "repositories", "manifest", "missing", "chunk"}
                if which == "database"
                else {"readyz", "chunk"}
            )
            for name, answer in down.items():
                expected = (503, "UNAVAILABLE") if name in needs_backend else (200, "")
                assert answer == expected, (name, down)
            env_cli = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(tmp_path / "c")}
            one_line_error(wreg("pull", "down/model@v1", env=env_cli), "unavailable")

            switch.on()
            assert set(_probe(server.url, manifest).values()) == {(200, "")}
            out = wreg("pull", "down/model@v1", "-o", str(tmp_path / "out"), env=env_cli)
            assert out.returncode == 0, out.stderr
            assert_same(model, tmp_path / "out")
        finally:
            server.stop()
            postgres.drop_database(database)
