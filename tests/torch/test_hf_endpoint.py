"""sentence-transformers loads the model by name from wreg through ``HF_ENDPOINT``,
exactly as it would from the Hub, and encodes as the model read from disk does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sentence_transformers  # noqa: F401 - the suite's environment must have it

import wreg
from wreg.testing.realdata import base_model
from wreg.testing.servers import RunningServer, start_server

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(sys.argv[1])
    vectors = model.encode(["wreg serves weights", "a registry for models"])
    print(json.dumps(vectors.tolist()))
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("server") / "data")
    wreg.Client(running.url, cache_dir=tmp_path_factory.mktemp("push")).push(
        base_model(), "sentence-transformers/all-minilm-l6-v2"
    )
    yield running
    running.stop()


def encode(model: str, tmp: Path, **env: str) -> list[list[float]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environment |= {"HF_HUB_CACHE": str(tmp / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", SCRIPT, model],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    vectors: list[list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return vectors


def test_sentence_transformers_by_name(server: RunningServer, tmp_path: Path) -> None:
    through_wreg = encode(
        "sentence-transformers/all-MiniLM-L6-v2", tmp_path, HF_ENDPOINT=server.url
    )
    from_disk = encode(str(base_model()), tmp_path / "disk", HF_HUB_OFFLINE="1")
    assert through_wreg == from_disk
    assert len(through_wreg) == 2
    assert len(through_wreg[0]) == 384
    # Offline afterwards, from the HF cache wreg filled: no server needed.
    offline = encode(
        "sentence-transformers/all-MiniLM-L6-v2",
        tmp_path,
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_OFFLINE="1",
    )
    assert offline == from_disk
