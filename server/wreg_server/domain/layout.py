"""Where things live in the object store — the whole layout, drawn once::

    <store root>
    └── chunks/
        └── <hex[0:2]>/          256-way fan-out so no directory grows huge
            └── <hex>            one encoded chunk (header + payload), named by the
                                 blake3 hex of its *raw* bytes

Only ``chunk_key`` builds keys; nothing else in the server spells a path. The object store
itself knows keys and bytes only (``objectstore/base.py``): mapping a chunk's digest to
its key is the registry's business, so it lives here, with the rest of the domain.
Manifests live in the index (they are small and transactional with their tags), not here.
"""

from __future__ import annotations

from typing import Final

from wreg.core.digest import hex_of

CHUNKS_PREFIX: Final = "chunks/"


def chunk_key(digest: str) -> str:
    """The object key of the chunk named ``digest`` (raises ``InvalidInput`` if malformed)."""
    hex_digest = hex_of(digest)
    return f"{CHUNKS_PREFIX}{hex_digest[:2]}/{hex_digest}"
