"""Chunk sizes and limits, in one place.

The values come from ``bench/chunk_sizes.py`` (figures in ``bench/RESULTS.md``): tensor
pieces of 4 MiB keep chunk counts low (a 140 GB model is ~35k chunks) while a changed
tensor costs at most its own bytes; small tensors are packed up to 64 KiB so a model's
hundreds of biases and norms do not become hundreds of requests, yet a changed layer
drags in at most one pack of neighbours.
"""

from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB

# safetensors: each tensor is cut into pieces of at most CHUNK_MAX from its own start.
CHUNK_MAX: Final = 4 * MiB
# Consecutive tensors smaller than this are packed into one chunk of at most this size.
CHUNK_PACK: Final = 64 * KiB

# Other files: FastCDC. Files smaller than CDC_MIN are one chunk.
CDC_AVG: Final = 1 * MiB
CDC_MIN: Final = 256 * KiB
CDC_MAX: Final = 4 * MiB

# Limits enforced by the server (and checked by the client before sending).
MAX_CHUNK_RAW: Final = 16 * MiB
MAX_CHUNK_ENCODED: Final = MAX_CHUNK_RAW + 64 * KiB
MAX_MANIFEST_BYTES: Final = 64 * MiB
MAX_MANIFEST_FILES: Final = 100_000
MAX_PATH_LENGTH: Final = 1024
# Segments in one path (``a/b/c`` has 3): deeper trees are refused, not walked.
MAX_PATH_DEPTH: Final = 64
# UTF-8 bytes of all of one manifest's paths together; validation is linear in these.
MAX_MANIFEST_PATH_BYTES: Final = 4 * MiB
# Nesting of arrays and objects in a manifest (the document itself is depth 1).
MAX_JSON_DEPTH: Final = 32
MAX_MISSING_QUERY: Final = 20_000
MAX_JSON_BODY: Final = 4 * MiB
# Batched chunk transfers (``.../chunks/fetch`` and ``.../chunks/upload``, ``core/batch.py``):
# chunks per request, and encoded bytes per request (the answer's for a fetch, the body's
# for an upload; frame headers included). 1 024 tiny chunks are ~70 KiB: per-request
# overhead, not bytes, is what batching saves, so a big model's ~35k chunks of a few
# bytes to a few KiB need ~35 requests; the byte cap bounds what one request holds.
MAX_BATCH_CHUNKS: Final = 1024
MAX_BATCH_BYTES: Final = 64 * MiB
