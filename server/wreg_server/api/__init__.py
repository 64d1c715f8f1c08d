"""HTTP layer: routes per resource, error translation, request context."""
