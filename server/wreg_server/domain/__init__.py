"""Registry logic: functions that take a session (and a store), raise ``wreg.core`` errors.

Routes stay thin: they parse HTTP, call one of these, and shape the response. Nothing
here knows about HTTP, so the same logic can back a CLI or a GC job.

Names, tags, digests and references that a request carries in its path arrive here
validated (the API validates each once, ``auth/guard.py``); what these functions are
handed otherwise — digests from a request body, manifest bodies, chunk bytes — they
validate themselves. Imports go one way: ``manifests`` → ``tags`` → ``repositories``;
``layout`` is the only module that builds object-store keys.
"""
