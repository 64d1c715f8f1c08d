"""Helpers for tests, ``make run`` and benchmarks; the registry itself never imports them.

- ``wreg.testing.realdata`` fetches a small real model (all-MiniLM-L6-v2, 90 MB fp32
  safetensors) once into a local cache and derives variants from it (bf16, a fine-tune of
  the last two layers, an inserted tensor) for dedupe and codec measurements;
- ``wreg.testing.procs``: the one ``free_port``, ``wait_for_http`` and ``stop_process``;
- ``wreg.testing.servers``: a real ``wreg-server serve`` process (``start_server``) and
  the ``wreg-server`` command (``run_wreg_server``, ``upgrade_database``);
- ``wreg.testing.webapps``: an aiohttp app served in-process on a free port.

Import the modules (``from wreg.testing import realdata``); this package re-exports
nothing so that ``python -m wreg.testing.realdata`` runs without a double import.
"""
