"""The test suite's one place for running nodes and waiting on them.

- ``nodes``: real ``cortex-node`` processes (``NodeProcess``, ``NodeFactory``), ``http``, ``run_cli``,
  ``connected`` / ``all_connected`` / ``wait_connected``. The reliability suite builds on it.
- ``inproc``: whole nodes in this process and event loop (``Fleet``, ``InProcNode``, ``FleetClock``;
  fixtures ``fleet`` and ``manual_fleet``, registered in tests/conftest.py).
- ``wait``: condition waits, ``wait_until`` (async) and ``wait_for`` (blocking); never fixed sleeps.
"""
