"""HTTP media types of wreg's two wire formats (a leaf module: cheap to import)."""

from typing import Final

CHUNK_MEDIA_TYPE: Final = "application/vnd.wreg.chunk.v1"
MANIFEST_MEDIA_TYPE: Final = "application/vnd.wreg.manifest.v1+json"
