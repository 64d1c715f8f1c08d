"""wreg client library."""
