"""Ctrl-C handling: never in the middle of writing a checkpoint."""

import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred_sigint():
    """Holds back SIGINT inside the block and raises KeyboardInterrupt after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
