"""`make run`: a registry on the embedded default, the real model pushed, pulled back,
compared byte for byte, and pushed again to show that nothing is re-sent.

Runs the real `wreg-server` and `wreg` commands, as a user would.
"""

from __future__ import annotations

import filecmp
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from wreg.testing.realdata import base_model

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"wreg-server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("wreg-server did not become healthy in time")


def wreg(*args: str, env: dict[str, str]) -> dict[str, object]:
    print(f"$ wreg {' '.join(args)}", flush=True)
    out = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [BIN / "wreg", *args, "--json"], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"wreg {args[0]} failed: {out.stderr.strip()}")
    result: dict[str, object] = json.loads(out.stdout)
    print("  " + json.dumps(result), flush=True)
    return result


def main() -> None:
    model = base_model()
    print(f"model: {model}")
    with tempfile.TemporaryDirectory(prefix="wreg-run-") as tmp:
        work = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = os.environ | {"WREG_URL": url, "WREG_CACHE": str(work / "cache")}
        server = subprocess.Popen(  # noqa: S603 - our own server, fixed arguments
            [
                BIN / "wreg-server",
                "serve",
                "--data",
                str(work / "data"),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        try:
            wait_healthy(url, server)
            print(f"server: {url} (data in {work / 'data'})")
            first = wreg("push", str(model), "minilm@v1", env=env)
            pulled = work / "pulled"
            wreg("pull", "minilm@v1", "-o", str(pulled), env=env)
            cmp = filecmp.dircmp(model, pulled)
            names = [p.relative_to(model) for p in model.rglob("*") if p.is_file()]
            match, mismatch, errors = filecmp.cmpfiles(model, pulled, names, shallow=False)
            if mismatch or errors or cmp.left_only:
                raise SystemExit(f"pulled tree differs: {mismatch or errors or cmp.left_only}")
            print(f"verified: {len(match)} files byte-identical")
            again = wreg("push", str(model), "minilm@v1", env=env)
            if again["bytes_new"] != 0 or again["bytes_sent"] != 0:
                raise SystemExit("re-push sent data")
            print(
                f"re-push sent {again['bytes_sent']} bytes "
                f"(first push sent {first['bytes_sent']} of {first['bytes_total']})"
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    print("make run: OK")


if __name__ == "__main__":
    main()
