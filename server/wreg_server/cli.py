"""``wreg-server``: run the registry, manage its index.

    wreg-server serve [--data DIR] [--host 127.0.0.1] [--port 8080]
    wreg-server db upgrade [--data DIR]
    wreg-server gc [--data DIR] [--dry-run] [--grace 24h] [--json] [--metrics-file F]
    wreg-server token create NAME --scope push:team-a/* [--scope pull:*] [--json]
    wreg-server token revoke NAME
    wreg-server token list [--json]
    wreg-server retention set REPO --keep N --match 'step-*' [--protect 'release-*' ...]
    wreg-server retention show [REPO] [--json]
    wreg-server retention plan REPO [--json]
    wreg-server retention clear REPO

Options not given fall back to ``WREG_*`` environment variables (see ``settings.py``).
Exit status: 0 done; 1 the command's work failed (``verify`` found damage, a token or
retention command was refused: ``error: …``); 2 configuration or usage — a bad setting,
an unusable data directory, log level or port, a missing or unreachable index (admin
commands never create one: only ``serve`` and ``db upgrade`` do), a missing server
extra — each one line on stderr naming what to fix; 3 ``serve`` could not start
(uvicorn's status, e.g. a port already taken). Tested in tests/server/test_startup_errors.py.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from wreg_server.domain import retention
    from wreg_server.domain.gc import GcResult
    from wreg_server.domain.scrub import ScrubResult
    from wreg_server.settings import ServerSettings

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Manage the index database.")
app.add_typer(db_app, name="db")
token_app = typer.Typer(
    no_args_is_help=True,
    help="Manage bearer tokens (in the index; works while servers run).",
)
app.add_typer(token_app, name="token")
retention_app = typer.Typer(
    no_args_is_help=True,
    help="Manage retention policies (applied by `wreg-server gc`; see domain/retention.py).",
)
app.add_typer(retention_app, name="retention")
log = logging.getLogger("wreg_server")

DataOption = Annotated[
    Path | None, typer.Option("--data", help="data directory (default $WREG_DATA or ./wreg-data)")
]


# Top-level modules of the ``server`` extra (pyproject.toml) and what they pull in: a
# client-only install lacks them, and ``main`` says so in one line.
SERVER_EXTRA: Final = frozenset(
    {
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
    }
)
NEEDS_EXTRA: Final = "wreg-server needs the server extra: pip install 'wreg[server]'"


def _fail(message: str) -> NoReturn:
    """A configuration or start-up error: one line on stderr, exit status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _settings(data: Path | None) -> ServerSettings:
    from pydantic import ValidationError

    from wreg_server.settings import ServerSettings, explain

    overrides: dict[str, Any] = {} if data is None else {"data": data}
    try:
        settings = ServerSettings(**overrides)
    except ValidationError as exc:
        _fail(explain(exc))
    _index_url(settings)  # a malformed URL fails here, not deep inside SQLAlchemy
    return settings


def _index_url(settings: ServerSettings) -> URL:
    """``WREG_DATABASE_URL`` parsed; exits 2 (without echoing it: it may hold a password)
    if it is not a URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.database_url)
        url.get_dialect()  # an unknown database (``pg://``) fails here, not at start-up
    except ArgumentError:  # NoSuchModuleError included
        _fail(
            "WREG_DATABASE_URL: not a database URL wreg can use; expected e.g. "
            "postgresql+asyncpg://user:password@host/wreg or sqlite+aiosqlite:///path/index.sqlite"
        )
    return url


def _check_dir(path: Path, what: str) -> None:
    """Exit 2 unless ``path`` is (or can be created as) a directory this process may write."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        reason = "it is a file"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        if os.access(path, os.W_OK | os.X_OK):
            return
        reason = "it is not writable"
    _fail(f"{what} {path}: {reason}; it must be a writable directory (created if missing)")


def _display_url(settings: ServerSettings) -> str:
    """The index as a log or error line may show it (a PostgreSQL password hidden)."""
    url = _index_url(settings)
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def _sqlite_path(settings: ServerSettings) -> Path | None:
    """The SQLite index's file, or None (PostgreSQL, or an in-memory database)."""
    url = _index_url(settings)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database))


def _check_storage(settings: ServerSettings, *, serving: bool) -> None:
    """Exit 2 unless what the command writes is usable: the SQLite index's directory and,
    to serve, the data directory (its ``tmp/`` spools uploads), the file store's root, and
    an object store backend that exists and is configured."""
    from wreg_server.objectstore import backends

    data = "data directory (--data / WREG_DATA)"
    if serving:
        _check_dir(settings.data, data)
    index = _sqlite_path(settings)
    if index is not None:
        same = index.parent == settings.data.absolute()
        _check_dir(index.parent, data if same else "index directory (WREG_DATABASE_URL)")
    if not serving:
        return
    if settings.store not in backends():
        _fail(f"WREG_STORE={settings.store!r}: expected one of {', '.join(backends())}")
    if settings.store == "file":
        _check_dir(settings.objects_path, "object store (WREG_STORE_PATH)")
    if settings.store == "s3" and not settings.s3_bucket:
        _fail("WREG_STORE='s3' needs WREG_S3_BUCKET (the bucket's name)")


def _sqlite_index_exists(path: Path) -> bool:
    import sqlite3

    if not path.is_file():
        return False
    try:
        # Read-only: looking must not create or change anything.
        with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
            ).fetchone()
    except sqlite3.Error:
        return False
    return found is not None


async def _open_index(settings: ServerSettings) -> AsyncEngine:
    """An engine on the existing index; exits 2 if there is none (admin commands never
    create one: an empty index would make gc, verify and token commands succeed at
    nothing)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    from wreg_server.db.session import create_engine

    index = _sqlite_path(settings)
    if index is not None and not _sqlite_index_exists(index):
        _no_index(settings)
    engine = create_engine(settings.database_url)
    if index is None:
        try:
            async with engine.connect() as conn:
                found = await conn.run_sync(lambda c: inspect(c).has_table("alembic_version"))
        except (OSError, DBAPIError) as exc:
            await engine.dispose()
            reason = exc.orig if isinstance(exc, DBAPIError) else exc
            _fail(f"cannot reach the index at {_display_url(settings)}: {reason}")
        if not found:
            await engine.dispose()
            _no_index(settings)
    return engine


def _no_index(settings: ServerSettings) -> NoReturn:
    _fail(
        f"no index at {_display_url(settings)} (pass --data or set WREG_DATABASE_URL; "
        "`wreg-server db upgrade` creates one)"
    )


@app.command()
def serve(
    data: DataOption = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the registry API (creating the data directory and index if missing)."""
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    from wreg_server import logs, serving
    from wreg_server.app import create_app

    if log_level.lower() not in LOG_LEVELS:
        _fail(f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    settings = _settings(data)
    if not 0 <= port <= 65535:
        _fail(f"--port {port}: expected 0 to 65535 (0: any free port)")
    _check_storage(settings, serving=True)
    logs.configure(settings.log_format, log_level)
    log.info(
        "wreg-server: data directory %s, index %s, store %s",
        *(settings.data.absolute(), _display_url(settings), settings.store),
    )
    if not settings.auth_enabled and not _is_loopback(host):
        log.warning(
            "!!! WREG_AUTH is off and the registry listens on %s, beyond this machine: "
            "ANYONE who can reach it can push, overwrite tags and delete models. Set "
            "WREG_AUTH=on and create tokens with `wreg-server token create` !!!",
            host,
        )
    # Our middleware writes the access lines (with request id and route), so uvicorn's are off.
    # Requests beyond max_connections in progress get an immediate 503 instead of queueing;
    # with request bodies capped (api/body.py) that bounds the memory requests can pin.
    # Header deadline, per-client caps, X-Forwarded-For from trusted proxies: serving.py.
    guard = serving.ConnectionGuard.from_settings(settings, serving.open_connection_limit())
    uvicorn.run(
        serving.ForwardedClientLimit(create_app(settings), guard),
        host=host,
        port=port,
        http=serving.protocol_for(guard),
        proxy_headers=False,
        log_level=log_level,
        log_config=None,
        access_log=False,
        timeout_keep_alive=int(max(1, settings.keep_alive_timeout)),
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=30,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


@db_app.command("upgrade")
def db_upgrade(data: DataOption = None) -> None:
    """Apply every pending migration to the index database."""
    from wreg_server.db.migrate import upgrade

    settings = _settings(data)
    _check_storage(settings, serving=False)
    upgrade(settings.database_url)
    typer.echo("index is up to date")


@app.command()
def gc(
    data: DataOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report what would be deleted; change nothing")
    ] = False,
    grace: Annotated[
        str,
        typer.Option(
            help="keep unreferenced chunks uploaded or queried more recently than this "
            "(e.g. 30m, 1h, 2d); must exceed the longest push"
        ),
    ] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    metrics_file: Annotated[
        Path | None,
        typer.Option(help="also write wreg_gc_* gauges here (node_exporter textfile format)"),
    ] = None,
) -> None:
    """Apply retention policies, then delete chunks no manifest references, once older
    than the grace period.

    Safe while servers keep serving (see wreg_server/domain/gc.py). Manifests are deleted
    here only by a repository's retention policy (`wreg-server retention`); a dry run
    lists them and deletes nothing.
    """
    import asyncio
    import time

    from wreg_server.domain.gc import parse_duration

    try:
        grace_delta = parse_duration(grace)
    except ValueError as exc:
        _fail(f"--grace: {exc}")
    settings = _settings(data)
    result = asyncio.run(_run_gc(settings, grace_delta.total_seconds(), dry_run))
    if metrics_file is not None:
        from prometheus_client import write_to_textfile

        from wreg_server.metrics import gc_registry

        write_to_textfile(str(metrics_file), gc_registry(result, time.time()))
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    verb = "would delete" if result.dry_run else "deleted"
    for gone in result.retention:
        typer.echo(
            f"{verb} {gone.repository}@{gone.digest} (tags {' '.join(gone.tags)}; "
            f"created {gone.created_at.isoformat(timespec='seconds')}) by retention"
        )
    if result.retention:
        typer.echo(f"{verb} {result.manifests_deleted} manifests by retention")
    typer.echo(
        f"{verb} {result.chunks_deleted} chunks, {result.bytes_freed} bytes stored "
        f"({result.raw_bytes_freed} raw); kept {result.chunks_in_grace} unreferenced "
        f"chunks younger than {grace}"
    )


@app.command()
def verify(
    data: DataOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Read every stored chunk back and check it against its digest (a scrub).

    Reports corrupt and missing chunks and the models that hold them; exits 1 if any.
    Only reads, so it is safe while servers keep serving.
    """
    import asyncio

    result = asyncio.run(_run_scrub(_settings(data)))
    if as_json:
        typer.echo(json.dumps(result.to_json()))
    else:
        typer.echo(
            f"checked {result.chunks_checked} chunks ({result.bytes_checked} bytes stored): "
            f"{len(result.corrupt)} corrupt, {len(result.missing)} missing"
        )
        for digest in result.corrupt:
            typer.echo(f"corrupt {digest}")
        for digest in result.missing:
            typer.echo(f"missing {digest}")
        for ref in result.affected:
            typer.echo(f"affected {ref}  (re-push it, or restore the objects from a replica)")
    if not result.ok:
        raise typer.Exit(1)


async def _run_scrub(settings: ServerSettings) -> ScrubResult:
    from wreg_server.db.session import create_sessionmaker
    from wreg_server.domain.scrub import scrub
    from wreg_server.objectstore import from_settings

    engine = await _open_index(settings)
    store = from_settings(settings)
    try:
        return await scrub(create_sessionmaker(engine), store)
    finally:
        await store.close()
        await engine.dispose()


async def _run_gc(settings: ServerSettings, grace_s: float, dry_run: bool) -> GcResult:
    from datetime import timedelta

    from wreg_server.db.migrate import upgrade_engine
    from wreg_server.db.session import create_sessionmaker
    from wreg_server.domain.gc import collect
    from wreg_server.objectstore import from_settings

    engine = await _open_index(settings)
    store = from_settings(settings)
    try:
        if settings.is_sqlite and settings.migrate_on_start:
            await upgrade_engine(engine)
        return await collect(
            create_sessionmaker(engine), store, grace=timedelta(seconds=grace_s), dry_run=dry_run
        )
    finally:
        await store.close()
        await engine.dispose()


async def _with_index(
    settings: ServerSettings, action: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    """Run ``action`` in a session on the existing index (migrating SQLite first, as
    ``serve`` does)."""
    from wreg_server.db.migrate import upgrade_engine
    from wreg_server.db.session import create_sessionmaker

    engine = await _open_index(settings)
    try:
        if settings.is_sqlite and settings.migrate_on_start:
            await upgrade_engine(engine)
        async with create_sessionmaker(engine)() as session:
            return await action(session)
    finally:
        await engine.dispose()


def _run_index(settings: ServerSettings, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    import asyncio

    from wreg.core.errors import WregError

    try:
        return asyncio.run(_with_index(settings, action))
    except WregError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object")]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="a name for the token (unique among live ones)")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="ACTION:GLOB, ACTION one of pull, push (implies pull), admin (implies both; "
            "admin:* also manages tokens); GLOB matches repository names (team-a/*, *). "
            "Repeatable",
        ),
    ],
    data: DataOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token and print it: it is shown this once (the index keeps only a hash)."""
    from wreg_server.auth import tokens

    info, secret = _run_index(_settings(data), lambda s: tokens.create(s, name, scope))
    scopes = [str(s) for s in info.scopes]
    if as_json:
        typer.echo(json.dumps({"name": info.name, "token": secret, "scopes": scopes}))
        return
    typer.echo(secret)
    typer.echo(f"created token {info.name!r} with scopes {' '.join(scopes)}", err=True)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="the token to revoke")],
    data: DataOption = None,
) -> None:
    """Revoke a token (servers stop accepting it within WREG_AUTH_CACHE_SECONDS)."""
    from wreg_server.auth import tokens

    _run_index(_settings(data), lambda s: tokens.revoke(s, tokens.validate_name(name)))
    typer.echo(f"revoked token {name!r}")


@token_app.command("list")
def token_list(data: DataOption = None, as_json: JsonOption = False) -> None:
    """Every token with its scopes and when it was created, last used, revoked."""
    from wreg_server.auth import tokens

    found = _run_index(_settings(data), tokens.list_all)
    if as_json:
        typer.echo(json.dumps({"tokens": [t.to_json() for t in found]}))
        return
    for t in found:
        used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never"
        state = f"revoked {t.revoked_at.isoformat(timespec='seconds')}" if t.revoked_at else "live"
        scopes = " ".join(str(s) for s in t.scopes)
        typer.echo(f"{t.name}\t{scopes}\tlast used {used}\t{state}")


RepoArgument = Annotated[str, typer.Argument(help="repository name, e.g. team/model")]


def _policy_line(policy: retention.Policy) -> str:
    protect = " ".join(policy.protect) or "-"
    return f"{policy.repository}\tkeep {policy.keep}\tmatch {policy.match}\tprotect {protect}"


@retention_app.command("set")
def retention_set(
    name: RepoArgument,
    keep: Annotated[int, typer.Option("--keep", help="how many matching manifests to keep")],
    match: Annotated[
        str, typer.Option("--match", help="glob on tag names, e.g. 'step-*' (case-sensitive)")
    ],
    protect: Annotated[
        list[str] | None,
        typer.Option("--protect", help="glob of tags never deleted, e.g. 'release-*'. Repeatable"),
    ] = None,
    data: DataOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set (create or replace) a repository's policy: keep the newest N manifests tagged
    MATCH, and every manifest tagged PROTECT or tagged anything else."""
    from wreg_server.domain import retention as domain

    def action(session: AsyncSession) -> Awaitable[domain.Policy]:
        return domain.set_policy(session, domain.Policy.of(name, keep, match, protect or []))

    policy = _run_index(_settings(data), action)
    if as_json:
        typer.echo(json.dumps(policy.to_json()))
        return
    typer.echo(_policy_line(policy))


@retention_app.command("show")
def retention_show(
    name: Annotated[str | None, typer.Argument(help="one repository (default: all)")] = None,
    data: DataOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one repository's policy, or every policy."""
    from wreg.core.reference import validate_name
    from wreg_server.domain import retention as domain

    async def action(session: AsyncSession) -> list[domain.Policy]:
        if name is None:
            return await domain.list_all(session)
        validate_name(name)
        found = await domain.get(session, name)
        return [] if found is None else [found]

    policies = _run_index(_settings(data), action)
    if as_json:
        typer.echo(json.dumps({"policies": [p.to_json() for p in policies]}))
        return
    if not policies:
        typer.echo("no retention policy" + (f" for {name!r}" if name else ""), err=True)
    for policy in policies:
        typer.echo(_policy_line(policy))


@retention_app.command("clear")
def retention_clear(name: RepoArgument, data: DataOption = None) -> None:
    """Remove a repository's policy (retention deletes nothing there any more)."""
    from wreg.core.reference import validate_name
    from wreg_server.domain import retention as domain

    def action(session: AsyncSession) -> Awaitable[bool]:
        return domain.clear(session, validate_name(name))

    removed = _run_index(_settings(data), action)
    typer.echo(f"cleared the retention policy of {name!r}" if removed else f"{name!r} had none")


@retention_app.command("plan")
def retention_plan(
    name: RepoArgument, data: DataOption = None, as_json: JsonOption = False
) -> None:
    """Dry run for one repository: what the next gc would delete, what it keeps and why."""
    from wreg.core.reference import validate_name
    from wreg_server.domain import retention as domain

    def action(session: AsyncSession) -> Awaitable[domain.RetentionPlan]:
        return domain.plan(session, validate_name(name))

    found = _run_index(_settings(data), action)
    if as_json:
        typer.echo(json.dumps(found.to_json()))
        return
    if found.policy is None:
        typer.echo(f"no retention policy for {name!r}", err=True)
        return
    for verdict, verb in [(v, "delete") for v in found.delete] + [(v, "keep") for v in found.keep]:
        created = verdict.created_at.isoformat(timespec="seconds")
        typer.echo(
            f"{verb}\t{verdict.digest}\t{' '.join(verdict.tags)}\t{created}\t{verdict.reason}"
        )
    typer.echo(f"would delete {len(found.delete)}, keep {len(found.keep)} manifests", err=True)


def main() -> None:
    """The ``wreg-server`` entry point."""
    try:
        app()
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in SERVER_EXTRA:
            raise
        typer.echo(f"error: {NEEDS_EXTRA} ({exc.name} is missing)", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
