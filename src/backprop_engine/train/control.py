"""Thread-safe requests from a UI (or a signal handler) to a running training loop."""

from __future__ import annotations

import threading


class TrainingControl:
    """Pause, resume, stop, and "save a checkpoint now"; the loop checks it between optimizer steps."""

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._checkpoint = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused loop must wake up to stop

    def request_checkpoint(self) -> None:
        self._checkpoint.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_until_running(self, timeout: float | None = None) -> bool:
        return self._running.wait(timeout)

    def take_checkpoint_request(self) -> bool:
        """True once per request."""
        if self._checkpoint.is_set():
            self._checkpoint.clear()
            return True
        return False
