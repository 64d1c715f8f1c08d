"""README's "Loading into a model" examples, run as written against a real server."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import torch

import wreg
from wreg.testing.realdata import base_model
from wreg.testing.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("server") / "data")
    wreg.Client(running.url, cache_dir=tmp_path_factory.mktemp("push")).push(
        base_model(), "team/minilm@v1"
    )
    yield running
    running.stop()


def reference_output(tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(base_model()))
    with torch.no_grad():
        out: torch.Tensor = model(tokens).last_hidden_state
    return out


TOKENS = torch.tensor([[101, 7592, 2088, 102]])


def test_transformers_example(server: RunningServer, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel

    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    # --- README
    files = client.pull("team/minilm@v1", exclude=["*.safetensors"])  # config, tokenizer
    model = AutoModel.from_config(AutoConfig.from_pretrained(files.path))
    state = client.load("team/minilm@v1", framework="torch")
    model.load_state_dict(state, strict=False)  # strict=False: position_ids is a buffer
    # ---
    model.eval()
    with torch.no_grad():
        out = model(TOKENS).last_hidden_state
    assert torch.equal(out, reference_output(TOKENS))


def test_weights_iterator_example(server: RunningServer, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel

    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    files = client.pull("team/minilm@v1", exclude=["*.safetensors"])
    model = AutoModel.from_config(AutoConfig.from_pretrained(files.path))

    # --- README
    def load_weights(
        model: torch.nn.Module, weights: Iterable[tuple[str, torch.Tensor]]
    ) -> set[str]:
        """What an inference engine's loader does with a weights iterator."""
        params = dict(model.named_parameters())
        loaded = set()
        for name, tensor in weights:  # each tensor as soon as its chunks are verified
            if name in params:
                params[name].data.copy_(tensor)
                loaded.add(name)
        return loaded

    loaded = load_weights(model, client.stream("team/minilm@v1", framework="torch"))
    # ---
    assert loaded == {n for n, _ in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        out = model(TOKENS).last_hidden_state
    assert torch.equal(out, reference_output(TOKENS))
