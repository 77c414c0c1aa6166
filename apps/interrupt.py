"""``kill`` (SIGTERM) as Ctrl-C for the training commands, so the one loop writes its checkpoint either way and
``--resume`` continues the run."""
from __future__ import annotations


def sigterm_as_interrupt() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread (a no-op in other threads)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)
