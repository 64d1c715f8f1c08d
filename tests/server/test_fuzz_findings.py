"""Defects found while fuzzing, kept as regression tests.

A manifest body can be valid JSON that hashes to its URL digest yet have no canonical
form: ``json.loads`` accepts ``NaN``/``Infinity``/``1e999`` and lone surrogate escapes
(``"\\ud800"``), which ``canonical_json`` (``allow_nan=False``, UTF-8) cannot write back.
``Manifest.from_json_bytes`` used to accept them, and the server's canonical-form check
then raised ``ValueError``/``UnicodeEncodeError`` — a 500. Now they are
``MANIFEST_INVALID``. (The core side is in ``tests/core/test_properties.py``.)
"""

from __future__ import annotations

import pytest

from tests.server.server_support import Api, assert_error

NON_CANONICAL = [
    b'{"files":[],"metadata":{"k":NaN},"schema":1}',
    b'{"files":[],"metadata":{"k":Infinity},"schema":1}',
    b'{"files":[],"metadata":{"k":1e999},"schema":1}',
    b'{"files":[],"metadata":{"k":"\\ud800"},"schema":1}',
]


@pytest.mark.parametrize("body", NON_CANONICAL)
def test_commit_of_manifest_without_canonical_form_is_400(api: Api, body: bytes) -> None:
    assert_error(api.commit("team/model", body), 400, "MANIFEST_INVALID")
