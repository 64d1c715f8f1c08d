"""S3 clients for the object store: aiobotocore against obstore, 4 MiB objects, on moto.

Both clients talk to one moto standalone server (``tests/services/moto.py``: its own
process on 127.0.0.1) and, for each concurrency level, PUT ``--objects`` distinct random
4 MiB objects and then GET them all back, the way ``objectstore/s3.py`` would (one
``put_object`` / ``get_object`` each, bodies read whole into ``bytes``). Each client gets
one long-lived client/store object, as in the server.

moto is itself slow (Python, one process, the object bodies go through Werkzeug), so wall
time mostly measures moto. The figure that tells the clients apart is **client CPU per
op**: ``time.process_time`` of this process (every thread, so obstore's Rust runtime
and aiobotocore's event loop are both counted), divided by the number of operations.
moto's own CPU per op (``/proc/<pid>/stat``) is shown so one can see what the wall time
is made of. Median of ``--runs`` runs; the clients alternate inside each run.

    .venv/bin/python bench/s3_clients.py [--runs 5] [--objects 32] [--write]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiobotocore
import obstore
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from obstore.store import S3Store

from results import bench_parser, machine, publish

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.services.moto import MotoS3, moto_server  # noqa: E402

MiB = 1024 * 1024
OBJECT_SIZE = 4 * MiB
CONCURRENCY = [1, 8]

Op = Callable[[str, bytes | None], Awaitable[bytes | None]]


@dataclass
class Figures:
    wall: float
    client_cpu: float
    moto_cpu: float


@dataclass
class Row:
    client: str
    op: str
    concurrency: int
    figures: list[Figures]

    def median(self, attr: str) -> float:
        values: list[float] = [getattr(f, attr) for f in self.figures]
        return statistics.median(values)


async def _measure(
    s3: MotoS3, keys: list[str], bodies: list[bytes] | None, op: Op, concurrency: int
) -> Figures:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            result = await op(keys[i], bodies[i] if bodies is not None else None)
            if bodies is None:
                assert result is not None
                assert len(result) == OBJECT_SIZE

    cpu0, moto0, t0 = time.process_time(), s3.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(keys))))
    wall = time.perf_counter() - t0
    n = len(keys)
    return Figures(wall, (time.process_time() - cpu0) / n, (s3.cpu_seconds() - moto0) / n)


async def _aiobotocore(s3: MotoS3, bucket: str, run: Callable[[Op, Op], Awaitable[None]]) -> None:
    session = get_session()
    config = AioConfig(max_pool_connections=max(CONCURRENCY), retries={"max_attempts": 1})
    async with session.create_client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name=s3.region,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        config=config,
    ) as client:

        async def put(key: str, body: bytes | None) -> None:
            await client.put_object(Bucket=bucket, Key=key, Body=body)

        async def get(key: str, body: bytes | None) -> bytes:
            response = await client.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
            return data

        await run(put, get)


async def _obstore(s3: MotoS3, bucket: str, run: Callable[[Op, Op], Awaitable[None]]) -> None:
    store = S3Store(
        bucket,
        endpoint=s3.endpoint,
        region=s3.region,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )

    async def put(key: str, body: bytes | None) -> None:
        assert body is not None
        await obstore.put_async(store, key, body)

    async def get(key: str, body: bytes | None) -> bytes:
        result = await obstore.get_async(store, key)
        return bytes(await result.bytes_async())

    await run(put, get)


Runner = Callable[[Op, Op], Awaitable[None]]
CLIENTS: dict[str, Callable[[MotoS3, str, Runner], Awaitable[None]]] = {
    f"aiobotocore {aiobotocore.__version__}": _aiobotocore,
    f"obstore {getattr(obstore, '__version__', '')}".strip(): _obstore,
}


async def bench(runs: int, objects: int) -> list[Row]:
    bodies = [os.urandom(OBJECT_SIZE) for _ in range(objects)]
    rows: dict[tuple[str, str, int], Row] = {}
    with moto_server() as s3:
        bucket = s3.create_bucket()
        for run_no in range(runs + 1):  # run 0 warms both clients and moto up
            for name, client in CLIENTS.items():

                async def run(put: Op, get: Op, name: str = name, run_no: int = run_no) -> None:
                    for c in CONCURRENCY:
                        keys = [f"{run_no}/{name.split()[0]}/{c}/{i}" for i in range(objects)]
                        for op_name, op, data in (("put", put, bodies), ("get", get, None)):
                            figures = await _measure(s3, keys, data, op, c)
                            if run_no:
                                row = rows.setdefault((name, op_name, c), Row(name, op_name, c, []))
                                row.figures.append(figures)

                await client(s3, bucket, run)
    return list(rows.values())


def report(rows: list[Row], runs: int, objects: int) -> str:
    lines = [
        f"{objects} distinct random {OBJECT_SIZE // MiB} MiB objects per op and concurrency, "
        f"median of {runs} runs, against moto {_moto_version()} on 127.0.0.1 (its own "
        f"process). Machine: {machine()}.",
        "",
        "| client | op | concurrency | MB/s (wall) | client CPU ms/op | moto CPU ms/op |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in sorted(rows, key=lambda r: (r.op != "put", r.concurrency, r.client)):
        mbps = objects * OBJECT_SIZE / row.median("wall") / 1e6
        lines.append(
            f"| {row.client} | {row.op} | {row.concurrency} | {mbps:.0f} | "
            f"{row.median('client_cpu') * 1e3:.1f} | {row.median('moto_cpu') * 1e3:.1f} |"
        )
    return "\n".join(lines)


def _moto_version() -> str:
    import moto

    return str(moto.__version__)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5, help="timing runs per figure")
    parser.add_argument("--objects", type=int, default=32, help="objects per run")
    args = parser.parse_args()
    body = report(asyncio.run(bench(args.runs, args.objects)), args.runs, args.objects)
    return publish("s3_clients", body, write=args.write)


if __name__ == "__main__":
    raise SystemExit(main())
