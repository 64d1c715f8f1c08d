"""wreg registry server."""
