"""Registry logic: functions that take a session (and a store), raise ``wreg.core`` errors.

Routes stay thin: they parse HTTP, call one of these, and shape the response. Nothing
here knows about HTTP, so the same logic can back a CLI or a GC job.
"""
