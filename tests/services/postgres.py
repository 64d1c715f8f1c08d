"""A throwaway PostgreSQL cluster for the tests: found or installed, started, torn down.

``start()`` finds ``initdb``/``pg_ctl`` (on ``PATH`` or under Debian's
``/usr/lib/postgresql/<version>/bin``), installing Debian's ``postgresql`` package with
apt-get when they are missing and we are root. It then creates a cluster in a fresh temp
directory (as the ``postgres`` user when running as root: PostgreSQL refuses to run as
root), tuned for tests (no fsync, trust authentication), listening on 127.0.0.1 only on a
free port with its unix socket inside the temp directory, so it never touches a system
cluster. ``PostgresServer.stop()`` stops it and deletes the directory.

Per test, either migrate one database once and ``reset()`` it (truncate every table, a
few milliseconds), or ``create_database(template=...)`` a copy of it (~50-200 ms).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from tests.services import apt
from wreg.testing.procs import free_port

SUPERUSER = "postgres"
RUN_AS = "postgres"  # the account PostgreSQL runs as when the tests run as root
INSTALL_TIMEOUT_S = 900
_BINARIES = ("initdb", "pg_ctl", "psql")

# Durability is worthless for a cluster deleted at the end of the session; speed is not.
_CONFIG = """
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sockets}'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed and could not be installed here."""


def in_ci() -> bool:
    """True on CI (``CI=true``), where a missing service must fail tests, not skip them."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass
class PostgresServer:
    """A running cluster; ``url(db)`` gives SQLAlchemy async URLs to its databases."""

    bin_dir: Path
    root: Path
    port: int
    run_as: str | None
    host: str = "127.0.0.1"
    version: int = 0  # server_version_num, e.g. 150004

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sockets"

    def url(self, database: str, driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with ``psql``; returns its unaligned, tuples-only output."""
        done = subprocess.run(  # noqa: S603 - the cluster's own psql, statements from the tests
            [
                *(str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER),
                *("-d", database, "-c", statement),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed on {statement!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """Create a database (a copy of ``template`` if given) and return its name."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        statement = f'CREATE DATABASE "{name}"'
        if template is not None:
            statement += f' TEMPLATE "{template}"'
        self.sql(statement)
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def reset(self, database: str, keep: tuple[str, ...] = ("alembic_version",)) -> None:
        """Empty every table of ``database`` but ``keep``, ids restarting at 1.

        Far cheaper than a new database per test (a copy is ~8 MB of files). Connections
        a previous test left behind are cut first so they cannot hold locks or see stale
        rows.
        """
        kept = ", ".join(f"'{name}'" for name in keep) or "''"
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"  # noqa: S608 - table names from the caller's code, not input
            " WHERE datname = current_database() AND pid <> pg_backend_pid();"
            " DO $$ DECLARE tables text; BEGIN"
            "  SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO tables"
            f"  FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ({kept});"
            "  IF tables IS NOT NULL THEN"
            "   EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE';"
            "  END IF;"
            " END $$;",
            database,
        )

    def stop(self) -> None:
        """Stop the cluster (immediately: nothing in it is worth a checkpoint) and delete it."""
        try:
            _run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"],
                self.run_as,
                timeout=60,
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``psql`` of one installation."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:  # Debian links some binaries into PATH; the real directory has them all
        candidates.append(Path(on_path).resolve().parent)
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: _version_key(p.parent.name), reverse=True)
    candidates += sorted(Path("/usr").glob("pgsql-*/bin"), reverse=True)  # RPM layout
    for candidate in candidates:
        if all((candidate / binary).is_file() for binary in _BINARIES):
            return candidate
    return None


def install() -> Path:
    """Install Debian's ``postgresql`` package (root + apt-get) and return its bin dir."""
    if shutil.which("apt-get") is None:
        raise PostgresUnavailable(
            "PostgreSQL (initdb, pg_ctl) is not installed and there is no apt-get to install "
            "it; install PostgreSQL server binaries"
        )
    if os.geteuid() != 0:
        raise PostgresUnavailable(
            "PostgreSQL (initdb, pg_ctl) is not installed and the tests are not running as "
            "root; run `sudo apt-get install -y postgresql` once"
        )
    # One installer at a time, even across concurrent test sessions on this machine.
    with FileLock(Path(tempfile.gettempdir()) / "wreg-postgresql-install.lock"):
        found = find_bin_dir()
        if found is not None:
            return found
        try:
            apt.install("postgresql", INSTALL_TIMEOUT_S)
        except apt.AptFailed as exc:
            raise PostgresUnavailable(str(exc)) from None
    found = find_bin_dir()
    if found is None:
        raise PostgresUnavailable("apt-get installed postgresql but initdb/pg_ctl are not found")
    return found


def start() -> PostgresServer:
    """Find or install PostgreSQL, then create and start a private cluster."""
    bin_dir = find_bin_dir() or install()
    run_as = _service_account()
    root = Path(tempfile.mkdtemp(prefix="wreg-pg-", dir=_temp_base(run_as)))
    try:
        return _start_cluster(bin_dir, root, run_as)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _start_cluster(bin_dir: Path, root: Path, run_as: str | None) -> PostgresServer:
    server = PostgresServer(bin_dir=bin_dir, root=root, port=0, run_as=run_as)
    server.socket_dir.mkdir()
    if run_as is not None:
        for path in (root, server.socket_dir):
            shutil.chown(path, run_as, run_as)
    _run(
        [
            *(str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", SUPERUSER),
            *("-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"),
        ],
        run_as,
        timeout=120,
    )
    with open(server.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(_CONFIG.format(sockets=server.socket_dir))
    log = root / "postgres.log"
    last_error: Exception | None = None
    for _ in range(5):  # a free port can be taken between choosing it and binding it
        server.port = free_port()
        try:
            _run(
                [
                    *(str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(log)),
                    *("-o", f"-p {server.port}", "-w", "-t", "60", "start"),
                ],
                run_as,
                timeout=90,
            )
            server.version = int(server.sql("SHOW server_version_num"))
            return server
        except RuntimeError as exc:
            last_error = exc
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise PostgresUnavailable(f"PostgreSQL did not start: {last_error}\n{tail}")


def _service_account() -> str | None:
    """``postgres`` when running as root (initdb refuses root), else nobody to switch to."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root but there is no {RUN_AS!r} user to run PostgreSQL as "
            "(Debian's postgresql package creates it)"
        ) from None
    return RUN_AS


def _temp_base(run_as: str | None) -> str:
    """A temp dir the service account can reach (TMPDIR may be private to root)."""
    base = tempfile.gettempdir()
    if run_as is None:
        return base
    path = Path(base).resolve()
    if all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents)):
        return base
    return "/tmp"  # noqa: S108 - only a base for mkdtemp, which makes a private dir


def _run(command: list[str], run_as: str | None, timeout: float) -> str:
    if run_as is not None:
        if shutil.which("runuser"):
            command = ["runuser", "-u", run_as, "--", *command]
        else:
            command = ["su", run_as, "-s", "/bin/sh", "-c", shlex.join(command)]
    # Output to a file, not a pipe: pg_ctl's server child must not hold our pipe open.
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(  # noqa: S603 - PostgreSQL's own tools, with arguments built here
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd="/",
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        output = out.read().decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"`{shlex.join(command)}` exited {done.returncode}: {output.strip()}")
    return output


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)
