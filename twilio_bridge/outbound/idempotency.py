"""`Idempotency-Key`: a repeat of a request gets the first one's answer again, and does nothing.

The first request claims the key atomically in the state store (`add`: only one caller, worker or host
wins), for CLAIM_SECONDS; its 202 is then kept for KEEP_SECONDS. A failure is not kept, so the client
can try again with the same key; a claim whose process died lapses. The key also names the resource
(`derived_id`), so a message queued just before a crash is not queued a second time.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..state import StateStore

HEADER = "Idempotency-Key"
MAX_KEY_CHARACTERS = 255
CLAIM_SECONDS = 60.0
KEEP_SECONDS = 24 * 3600.0

Answer = tuple[dict[str, Any], int]


@dataclass(frozen=True)
class Key:
    scope: str  # "messages" or "calls": one key may be used once for each
    value: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.scope}\n{self.value}".encode()).hexdigest()

    def derived_id(self, prefix: str) -> str:
        """The resource's id, the same for every repeat of the request."""
        return prefix + self.digest[:32]


def fingerprint(payload: Any) -> str:
    """The same for the same JSON; "surrogatepass" so that any string the parser returns has one, even a lone
    surrogate (every other string encodes as it did before, so keys claimed before keep matching)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def once(store: StateStore, key: Key | None, payload: Any, act: Callable[[], Answer]) -> tuple[Answer, bool]:
    """`act()`'s answer, or the first request's when this one repeats it; True when replayed."""
    if key is None:
        return act(), False
    name = f"outbound:idempotency:{key.digest}"
    request = fingerprint(payload)
    if not store.add(name, {"request": request}, CLAIM_SECONDS):
        first = store.get(name) or {}
        if first.get("request") not in (None, request):
            return ({"error": f"{HEADER}: already used for a different request"}, 422), False
        if "answer" not in first:
            return ({"error": f"{HEADER}: the first request with this key is still being processed"}, 409), False
        return (first["answer"], first["status"]), True
    try:
        body, status = act()
    except BaseException:
        store.delete(name)
        raise
    if 200 <= status < 300:
        store.put(name, {"request": request, "answer": body, "status": status}, KEEP_SECONDS)
    else:
        store.delete(name)
    return (body, status), False
