"""A list-and-watch loop over one API collection, as client-go's informers do it (minimal)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tests.harness.rest import Obj, Rest

# Called with ("SYNC", {"items": [...]}) after each list, then ("ADDED" | "MODIFIED" | "DELETED", obj).
Handler = Callable[[str, Obj], None]


def run_informer(
    rest: Rest, path: str, handle: Handler, stop: threading.Event, log: logging.Logger
) -> None:
    """List, then watch from the list's version; relist when the watch expires."""
    while not stop.is_set():
        try:
            listed = rest.get(path)
            version = listed["metadata"]["resourceVersion"]
            handle("SYNC", {"items": listed["items"]})
            while not stop.is_set():
                expired = True
                for event in rest.watch(path, version, timeout_seconds=30):
                    if stop.is_set():
                        return
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        handle(kind, obj)
                else:
                    expired = False
                if expired:
                    break
        except Exception as exc:
            if stop.is_set():
                return
            log.warning("informer %s: %s; relisting", path, exc)
            stop.wait(1.0)
