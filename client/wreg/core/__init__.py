"""wreg core format: no network, no server."""
