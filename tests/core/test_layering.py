"""wreg.core must stay free of network and server code (xet-core's one-way layering)."""

import subprocess
import sys

FORBIDDEN = ["aiohttp", "httpx", "wreg_server", "fastapi", "sqlalchemy", "wreg._http", "wreg.cli"]


def test_core_imports_no_network_or_server_modules() -> None:
    code = (
        "import sys, wreg.core.chunking, wreg.core.digest, wreg.core.encoding, "
        "wreg.core.errors, wreg.core.manifest, wreg.core.reference, wreg.core.sizes\n"
        f"bad = [m for m in sys.modules\n"
        f"       if m.split('.')[0] in {FORBIDDEN!r} or m in {FORBIDDEN!r}]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
