"""The serving loop: one thread steps the engine's scheduler while it has work and tells each
request's listener about its tokens, so that an asyncio server never blocks on the model."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from ..engine.handles import Request, RequestHandle
from ..engine.scheduler import Scheduler

log = logging.getLogger(__name__)

#: ``listener(handle, token)``: a new token, or ``token=None`` once when the request is over
#: (finished, cancelled or failed: ``handle.status`` and ``handle.error`` say which).
Listener = Callable[[RequestHandle, "int | None"], None]


class ServingLoop:
    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self._listeners: dict[RequestHandle, Listener] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dyrate-serving-loop", daemon=True)

    def start(self) -> "ServingLoop":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def submit(self, request: Request, listener: Listener) -> RequestHandle:
        """Queue ``request`` (its errors raise here, before any work)."""
        with self._lock:
            handle = self.scheduler.submit(request)
            self._listeners[handle] = listener
        self._wake.set()
        return handle

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.scheduler.has_work:
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            try:
                new = self.scheduler.step()
            except Exception as error:  # a bug or a device error: fail the requests, keep serving
                log.exception("the scheduler's step failed")
                self._fail_all(error)
                continue
            with self._lock:
                listeners = dict(self._listeners)
            for handle, token in new:
                listeners[handle](handle, token)
            for handle, listener in listeners.items():
                if handle.done:
                    listener(handle, None)
                    with self._lock:
                        self._listeners.pop(handle, None)

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            listeners, self._listeners = self._listeners, {}
        for handle, listener in listeners.items():
            handle.error = error
            handle.cancel()
            handle.status = "failed"
            listener(handle, None)
        self.scheduler.reset()
