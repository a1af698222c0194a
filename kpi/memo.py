"""A bounded least-recently-used cache that threads can share (cachetools' LRUCache, locked)."""

from threading import Lock
from typing import Any

from cachetools import LRUCache


class Memo:
    def __init__(self, size: int) -> None:
        self._items: LRUCache = LRUCache(maxsize=size)
        self._lock = Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            return self._items.get(key)

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
