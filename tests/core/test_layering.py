"""The layering, as drawn, kept one-way (xet-core enforces its own with the build graph).

Client::

    wreg.core  ←  wreg (library: wreg/__init__.py, wreg/_*.py)  ←  wreg.cli
    (digests, chunking, formats, error codes: no network, no server, no CLI)

Server (arrows point at what a layer may import)::

    api  →  domain  →  db, objectstore          api, domain, db, auth  →  wreg.core
    api  →  auth    →  db                       api, auth  →  context  →  objectstore
    (api never imports db itself)

The object store knows keys and bytes only: it imports nothing from ``wreg`` (not even
``wreg.core``) and nothing of the server but ``settings``. Route modules do not import
each other; no layer imports the entry points ``app`` and ``cli``; the server takes
only ``wreg.core`` from the client, and the client nothing from the server. Within the
server, no two modules import each other, however indirectly.

Imports are read statically with ``ast`` from every module, at module level, inside
functions (lazy imports) and under ``if TYPE_CHECKING`` alike, so no import can hide an
arrow pointing the wrong way. ``test_core_imports_no_network_or_server_modules`` also
checks at run time what importing ``wreg.core`` loads, third-party modules included.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"wreg": REPO / "client" / "wreg", "wreg_server": REPO / "server" / "wreg_server"}

# Third-party modules (and client modules) that mean network, server or CLI code.
NETWORK_SERVER_CLI = (
    "aiohttp",
    "httpx",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "obstore",
    "typer",
    "wreg_server",
)


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module: who imports it, and where."""

    importer: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True, slots=True)
class Rule:
    """Modules under ``importer`` (or, if ``exact``, that module only) may import nothing
    under ``forbidden`` except what is under ``allowed``."""

    importer: str
    forbidden: tuple[str, ...]
    why: str
    allowed: tuple[str, ...] = ()
    exact: bool = False

    def broken_by(self, imp: Import) -> bool:
        importer_matches = (
            imp.importer == self.importer if self.exact else within(imp.importer, self.importer)
        )
        return (
            importer_matches
            and any(within(imp.target, f) for f in self.forbidden)
            and not any(within(imp.target, a) for a in self.allowed)
        )


def within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or inside it (``wreg`` does not contain ``wreg_server``)."""
    return module == prefix or module.startswith(prefix + ".")


def modules() -> dict[str, Path]:
    """Every module of both packages, by dotted name."""
    found: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imports_of(module: str, path: Path) -> Iterator[Import]:
    return imports_in(module, path, path.read_text(encoding="utf-8"))


def imports_in(module: str, path: Path, source: str) -> Iterator[Import]:
    """Every import in ``source`` (the text of ``path``), wherever it sits; ``from a import
    b`` names ``a.b`` when that is a module, else ``a``."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package, up level - 1
                package = module.split(".")
                if not is_package:
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if candidate in MODULES else base
                yield Import(module, target, path, node.lineno)


# Each (importer, target, line) once: ``from a import b, c`` names module ``a`` twice.
ALL_IMPORTS = list(
    dict.fromkeys(imp for module, path in MODULES.items() for imp in imports_of(module, path))
)

_LAYERS = ("api", "auth", "db", "domain", "hf", "objectstore", "ui")
_ENTRY_POINTS = ("wreg_server.app", "wreg_server.cli")


def _server(*names: str) -> tuple[str, ...]:
    return tuple(f"wreg_server.{n}" for n in names)


RULES = [
    # Client.
    Rule(
        "wreg.core",
        ("wreg", *NETWORK_SERVER_CLI),
        "wreg.core is pure: no network, server or CLI code, nothing of the client around it",
        allowed=("wreg.core",),
    ),
    Rule("wreg", ("wreg_server",), "the client never imports the server (installed without it)"),
    *(
        Rule(m, ("wreg.cli",), "the library never imports the CLI (built on it)", exact=True)
        for m in MODULES
        if m == "wreg" or (m.startswith("wreg._") and m.count(".") == 1)
    ),
    # Server.
    Rule(
        "wreg_server",
        ("wreg",),
        "the server takes only wreg.core from the client",
        allowed=("wreg.core",),
    ),
    Rule(
        "wreg_server.objectstore",
        ("wreg", "wreg_server"),
        "the object store knows keys and bytes only (domain/layout.py maps chunks to keys)",
        allowed=("wreg_server.objectstore", "wreg_server.settings"),
    ),
    Rule(
        "wreg_server.db",
        _server("domain", "api", "auth", "objectstore", "context"),
        "db knows the index only: nothing of domain, api, auth, context or the object store",
    ),
    Rule("wreg_server.api", _server("db", "hf"), "api reaches the index through domain (and auth)"),
    Rule(
        "wreg_server.hf",
        _server("db"),
        "the HF API is an api of its own: it reaches the index through domain",
    ),
    Rule(
        "wreg_server.ui",
        _server("db", "hf"),
        "the web UI reaches the index through domain (and auth, api's deps), like hf",
    ),
    Rule(
        "wreg_server.domain",
        _server("api", "auth", "context", "hf", "ui"),
        "domain is below api, hf and auth",
    ),
    Rule(
        "wreg_server.auth", _server("api", "domain", "hf"), "auth builds on db and context, not api"
    ),
    *(
        Rule(f"wreg_server.{layer}", _ENTRY_POINTS, "app and cli sit on top of everything")
        for layer in _LAYERS
    ),
    Rule(
        "wreg_server.context",
        _server("api", "auth", "domain", "db"),
        "the app context is below api and auth (both use it)",
    ),
]


def broken(rules: list[Rule], imports: list[Import]) -> list[str]:
    return [
        f"{imp.where()}: {imp.importer} imports {imp.target}: {rule.why}"
        for imp in imports
        for rule in rules
        if rule.broken_by(imp)
    ]


def routes_importing_routes(imports: list[Import]) -> list[str]:
    routes = "wreg_server.api.routes"
    return [
        f"{imp.where()}: {imp.importer} imports {imp.target}: route modules do not import "
        "each other (shared pieces live in wreg_server.api: caching.py, body.py, deps.py)"
        for imp in imports
        if within(imp.importer, routes)
        and within(imp.target, routes)
        and imp.target != imp.importer
    ]


def server_cycles(imports: list[Import]) -> list[str]:
    """One message per import cycle among server modules (each found once)."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        inside = within(imp.importer, "wreg_server") and imp.target in MODULES
        if inside and imp.target != imp.importer:
            graph.setdefault(imp.importer, {}).setdefault(imp.target, imp)
    cycles: list[str] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == 1:
                loop = [*path[path.index(target) :], target]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    edges = [graph[a][b].where() for a, b in itertools.pairwise(loop)]
                    cycles.append(f"{' -> '.join(loop)} (at {', '.join(edges)})")
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_parser_sees_lazy_and_type_checking_imports() -> None:
    """The check would be hollow if function-local or TYPE_CHECKING imports were missed."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from wreg_server.api import deps\n"
        "def f() -> None:\n"
        "    import wreg_server.domain.tags\n"
        "    from . import manifests\n"
    )
    fake = REPO / "server" / "wreg_server" / "domain" / "fake.py"
    imports = list(imports_in("wreg_server.domain.fake", fake, source))
    assert {i.target for i in imports} >= {
        "wreg_server.api.deps",
        "wreg_server.domain.tags",
        "wreg_server.domain.manifests",
    }
    assert broken(RULES, imports) == [
        "server/wreg_server/domain/fake.py:3: wreg_server.domain.fake imports "
        "wreg_server.api.deps: domain is below api, hf and auth"
    ]


@pytest.mark.parametrize(
    "scope", ["wreg.core", "wreg", "wreg_server"], ids=["core", "client", "server"]
)
def test_imports_follow_the_layering(scope: str) -> None:
    imports = [i for i in ALL_IMPORTS if within(i.importer, scope)]
    if scope == "wreg":
        imports = [i for i in imports if not within(i.importer, "wreg.core")]
    problems = broken(RULES, imports)
    assert not problems, "imports against the layering:\n  " + "\n  ".join(problems)


def test_route_modules_do_not_import_each_other() -> None:
    problems = routes_importing_routes(ALL_IMPORTS)
    assert not problems, "\n  ".join(["route modules importing each other:", *problems])


def test_server_modules_import_no_cycles() -> None:
    cycles = server_cycles(ALL_IMPORTS)
    assert not cycles, "\n  ".join(["import cycles in the server:", *cycles])


def test_core_imports_no_network_or_server_modules() -> None:
    """At run time: importing every wreg.core module loads no network, server or CLI code."""
    core = sorted(m for m in MODULES if within(m, "wreg.core"))
    forbidden = [*NETWORK_SERVER_CLI, "wreg._http", "wreg.cli"]
    code = (
        f"import importlib, sys\n"
        f"for m in {core!r}: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules\n"
        f"       if m.split('.')[0] in {forbidden!r} or m in {forbidden!r}\n"
        f"       or any(m.startswith(f + '.') for f in {forbidden!r})]\n"
        "print(','.join(sorted(bad)))"
    )
    out = subprocess.run(  # noqa: S603 - this interpreter, on the fixed script above
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"importing wreg.core loaded: {out.stdout.strip()}"
