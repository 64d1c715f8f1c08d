"""The safetensors header for the loader: re-exported from ``wreg.core.safetensors``,
the format's one strict parser (shared with the registry's ``inspect``)."""

from __future__ import annotations

from wreg.core.safetensors import (
    ITEMSIZE,
    MAX_DIMS,
    MAX_HEADER,
    MAX_NAME,
    MAX_TENSORS,
    PREFIX,
    Header,
    TensorInfo,
    header_length,
    invalid,
    parse,
    render,
)

__all__ = [
    "ITEMSIZE",
    "MAX_DIMS",
    "MAX_HEADER",
    "MAX_NAME",
    "MAX_TENSORS",
    "PREFIX",
    "Header",
    "TensorInfo",
    "header_length",
    "invalid",
    "parse",
    "render",
]
