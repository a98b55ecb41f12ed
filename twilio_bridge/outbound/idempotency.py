"""`Idempotency-Key`: a repeat of a request gets the first one's answer again, and does nothing.

The first request claims the key atomically in the state store (`add`: only one caller, worker or host
wins), for CLAIM_SECONDS; its 202 is then kept for KEEP_SECONDS. A failure is not kept, so the client
can try again with the same key; a claim whose process died lapses. The resource's id is minted when
the key is claimed and kept beside it, so a retry of the same request acts under the same id (a message
queued just before a crash is not queued a second time); once the key's memory lapses, the key is new
again, and so is the id: a record outlives the key's memory, and must not be taken for the new one's.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..state import StateStore
from . import ids

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


def fingerprint(payload: Any) -> str:
    """The same for the same JSON; "surrogatepass" so that any string the parser returns has one, even a lone
    surrogate (every other string encodes as it did before, so keys claimed before keep matching)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def once(store: StateStore, key: Key | None, payload: Any, prefix: str,
         act: Callable[[str], Answer]) -> tuple[Answer, bool]:
    """`act(id)`'s answer, with an id starting with `prefix`; or the first request's answer when this one
    repeats it: True when replayed."""
    if key is None:
        return act(ids.mint(prefix)), False
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
        body, status = act(_claimed_id(store, key, request, prefix))
    except BaseException:
        store.delete(name)
        raise
    if 200 <= status < 300:
        store.put(name, {"request": request, "answer": body, "status": status}, KEEP_SECONDS)
    else:
        store.delete(name)
    return (body, status), False


def _claimed_id(store: StateStore, key: Key, request: str, prefix: str) -> str:
    """The id the request that holds the claim acts under: the one a failed or crashed try of the same request
    had, else a new one. Kept as long as the answer, and written before it, so it lapses first."""
    name = f"outbound:idempotency:{key.digest}:id"
    kept = store.get(name)
    if kept is not None and kept["request"] == request:
        return str(kept["id"])
    minted = ids.mint(prefix)
    store.put(name, {"request": request, "id": minted}, KEEP_SECONDS)
    return minted
