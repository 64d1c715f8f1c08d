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
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from wreg_server.settings import ServerSettings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from wreg_server.domain import retention
    from wreg_server.domain.gc import GcResult
    from wreg_server.domain.scrub import ScrubResult

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


def _settings(data: Path | None) -> ServerSettings:
    overrides: dict[str, Any] = {} if data is None else {"data": data}
    return ServerSettings(**overrides)


@app.command()
def serve(
    data: DataOption = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the registry API."""
    import uvicorn

    from wreg_server import logs, serving
    from wreg_server.app import create_app

    settings = _settings(data)
    logs.configure(settings.log_format, log_level)
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
        raise typer.BadParameter(str(exc), param_hint="--grace") from None
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
    from wreg_server.db.session import create_engine, create_sessionmaker
    from wreg_server.domain.scrub import scrub
    from wreg_server.objectstore import from_settings

    engine = create_engine(settings.database_url)
    store = from_settings(settings)
    try:
        return await scrub(create_sessionmaker(engine), store)
    finally:
        await store.close()
        await engine.dispose()


async def _run_gc(settings: ServerSettings, grace_s: float, dry_run: bool) -> GcResult:
    from datetime import timedelta

    from wreg_server.db.migrate import upgrade_engine
    from wreg_server.db.session import create_engine, create_sessionmaker
    from wreg_server.domain.gc import collect
    from wreg_server.objectstore import from_settings

    engine = create_engine(settings.database_url)
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
    """Run ``action`` in a session on the index (migrating SQLite first, as ``serve`` does)."""
    from wreg_server.db.migrate import upgrade_engine
    from wreg_server.db.session import create_engine, create_sessionmaker

    engine = create_engine(settings.database_url)
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
    app()
