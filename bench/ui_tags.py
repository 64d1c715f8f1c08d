"""The web UI's tags page on a repository with 10 000 tags: server time per page.

A real ``wreg-server serve`` (SQLite, auth off) holds one small manifest pushed with
``wreg.Client``; ``--tags`` tags pointing at it are inserted straight into the index (one
statement: the API would take minutes and measure something else). Then
``/ui/repository`` is requested ``--runs`` times for each of: the first page, a page in
the middle and the last page (keyset cursors), and a prefix search. The figure is the
server's own render time, from the ``Server-Timing`` header the UI sets (route start to
rendered HTML: both queries and the template), median (min-max); the client's wall time
per request is shown beside it. Target: ≤ 300 ms.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import insert, select

from results import bench_parser, machine, publish
from wreg import Client
from wreg.testing.servers import start_server
from wreg_server.db.models import ManifestRow, Repository, Tag
from wreg_server.db.session import create_engine, create_sessionmaker
from wreg_server.settings import ServerSettings

NAME = "bench/tags"
TARGET_MS = 300.0
TIMING = re.compile(r"render;dur=([0-9.]+)")


async def add_tags(data: Path, count: int) -> None:
    engine = create_engine(ServerSettings(data=data).database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            repo_id = await session.scalar(select(Repository.id).where(Repository.name == NAME))
            manifest_id = await session.scalar(
                select(ManifestRow.id).where(ManifestRow.repository_id == repo_id)
            )
            now = datetime.now(UTC)
            rows = [
                {"repository_id": repo_id, "name": f"t-{i:05d}", "manifest_id": manifest_id}
                | {"updated_at": now}
                for i in range(count)
            ]
            await session.execute(insert(Tag), rows)
            await session.commit()
    finally:
        await engine.dispose()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    middle = f"t-{args.tags // 2:05d}"
    last = f"t-{max(args.tags - 101, 0):05d}"
    cases = {
        "first page": {"name": NAME},
        f"middle page (after {middle})": {"name": NAME, "after": middle},
        f"last page (after {last})": {"name": NAME, "after": last},
        "prefix search q=t-09": {"name": NAME, "q": "t-09"},
    }
    server_ms: dict[str, list[float]] = {c: [] for c in cases}
    wall_ms: dict[str, list[float]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        work = Path(tmp)
        model = work / "model"
        model.mkdir()
        (model / "config.json").write_text('{"layers": 2}')
        (model / "weights.bin").write_bytes(bytes(range(256)) * 4096)
        srv = start_server(work / "data")
        try:
            Client(srv.url, cache_dir=work / "cache").push(model, f"{NAME}@seed")
            asyncio.run(add_tags(work / "data", args.tags))
            with httpx.Client(base_url=srv.url, timeout=60) as http:
                for params in cases.values():  # warm up: templates compiled, pages cached
                    http.get("/ui/repository", params=params).raise_for_status()
                for _ in range(args.runs):
                    for case, params in cases.items():
                        response = http.get("/ui/repository", params=params)
                        response.raise_for_status()
                        assert 'data-tag="t-' in response.text, case
                        timing = TIMING.search(response.headers.get("server-timing", ""))
                        assert timing is not None, response.headers
                        server_ms[case].append(float(timing.group(1)))
                        wall_ms[case].append(response.elapsed.total_seconds() * 1e3)
        finally:
            srv.stop()
    worst = max(statistics.median(v) for v in server_ms.values())
    lines = [
        machine(),
        "",
        f"`/ui/repository` of a repository with {args.tags} tags (SQLite), 100 tags a page, "
        f"{args.runs} requests per case, median (min-max). Target: server time "
        f"≤ {TARGET_MS:.0f} ms.",
        "",
        "| page | server ms (Server-Timing) | client wall ms |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {c} | {spread(server_ms[c])} | {spread(wall_ms[c])} |" for c in cases]
    verdict = "meets" if worst <= TARGET_MS else "MISSES"
    lines += ["", f"Slowest median {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target."]
    return publish("ui-tags", "\n".join(lines), write=args.write)


if __name__ == "__main__":
    raise SystemExit(main())
