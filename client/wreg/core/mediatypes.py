"""HTTP media types of wreg's wire formats (a leaf module: cheap to import)."""

from typing import Final

CHUNK_MEDIA_TYPE: Final = "application/vnd.wreg.chunk.v1"
MANIFEST_MEDIA_TYPE: Final = "application/vnd.wreg.manifest.v1+json"
# Frames of encoded chunks (``core/batch.py``): batched fetch answers, batched uploads.
CHUNK_FRAMES_MEDIA_TYPE: Final = "application/vnd.wreg.chunk-frames.v1"
# On a batched fetch's answer: batches cost this registry no more than single GETs (its
# chunks are local files it sends with sendfile), so a client may batch large chunks too.
LARGE_BATCHES_HEADER: Final = "x-wreg-large-batches"
