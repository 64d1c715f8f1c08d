"""moto's standalone S3 server on 127.0.0.1, for tests and benchmarks.

MinIO is not installable on these machines, so the S3 backend is tested against moto
(``moto[server]``, a dev dependency) running as its own process on a free port: a
separate process keeps its CPU off the test process's GIL and lets a ``wreg-server``
subprocess reach it too. moto accepts any credentials and does not check presigned-URL
expiry; everything else the backend uses (PUT, GET, HEAD, DELETE, ListObjectsV2
pagination, SigV4 presigned GETs) behaves like S3.

    with moto_server() as s3:
        bucket = s3.create_bucket()
        settings = ServerSettings(store="s3", **s3.settings(bucket))
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from wreg.testing.procs import free_port, stop_process, wait_for_http

if TYPE_CHECKING:
    from wreg_server.objectstore.s3 import S3Store

REGION = "us-east-1"
ACCESS_KEY = "wreg-test-access"
SECRET_KEY = "wreg-test-secret"  # noqa: S105 - moto accepts any credentials


@dataclass(frozen=True)
class MotoS3:
    """A running moto server: its endpoint, credentials and process."""

    endpoint: str
    process: subprocess.Popen[bytes]
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh uniquely named one by default) and return its name.

        moto does not check signatures, so a plain unsigned PUT is enough.
        """
        name = name or f"wreg-{uuid.uuid4().hex[:12]}"
        response = httpx.put(f"{self.endpoint}/{name}", timeout=30)
        response.raise_for_status()
        return name

    def settings(self, bucket: str, **overrides: Any) -> dict[str, Any]:
        """``ServerSettings`` keyword arguments for an S3 store on this server."""
        return {
            "store": "s3",
            "s3_endpoint": self.endpoint,
            "s3_bucket": bucket,
            "s3_region": self.region,
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": self.secret_key,
            **overrides,
        }

    def store(self, bucket: str) -> S3Store:
        """The registry's own S3 object store on ``bucket`` here (signed requests), for a
        test to look behind the API; ``await store.close()`` when done."""
        # Imported here: the session fixtures load this module for every test, and client
        # tests must not depend on the server package importing.
        from wreg_server.objectstore.s3 import S3Store

        return S3Store(
            bucket,
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
        )

    def env(self, bucket: str, *, redirect: bool = False) -> dict[str, str]:
        """The environment a ``wreg-server`` process needs for an S3 store here."""
        return {
            "WREG_STORE": "s3",
            "WREG_S3_ENDPOINT": self.endpoint,
            "WREG_S3_BUCKET": bucket,
            "WREG_S3_REGION": self.region,
            "WREG_S3_REDIRECT": "true" if redirect else "false",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")


def _start(log: Path | None) -> MotoS3 | None:
    port = free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(  # noqa: S603 - this interpreter running moto.server
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=os.environ | {"MOTO_ALLOW_NONEXISTENT_REGION": "true"},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(
            f"{endpoint}/moto-api/", process, timeout=60, ready=lambda r: r.status_code < 500
        )
    except RuntimeError:
        if process.poll() is not None:
            return None  # most likely lost the port to someone else: the caller retries
        stop_process(process)
        raise
    return MotoS3(endpoint, process)


@contextmanager
def moto_server(log: Path | None = None) -> Iterator[MotoS3]:
    """Run moto's S3 server on a free 127.0.0.1 port for the duration of the block."""
    for _ in range(3):
        server = _start(log)
        if server is not None:
            break
    else:
        raise RuntimeError("moto server exited on start three times (is moto[server] installed?)")
    try:
        yield server
    finally:
        stop_process(server.process)
