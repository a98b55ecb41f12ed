"""The ids the outbound API mints: a prefix (OM a message, OC a call) and 32 random hexadecimal digits.

Only an id of that form is looked up: an id is part of state store keys, and any other text from a URL
could name another of them (`OM…:twilio:sent` is the key of a status, not of a message).
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any, TypeGuard

from ..state import StateStore

HEX_DIGITS = 32


def mint(prefix: str) -> str:
    return prefix + secrets.token_hex(HEX_DIGITS // 2)


def minted(prefix: str, value: str | None) -> TypeGuard[str]:
    """True when `value` has the form `mint(prefix)` gives, so it names no key but its own record's."""
    return value is not None and re.fullmatch(f"{prefix}[0-9a-f]{{{HEX_DIGITS}}}", value) is not None


def stored(store: StateStore, prefix: str, value: str | None, key: Callable[[str], str]) -> dict[str, Any] | None:
    """The record under `key(value)` when `value` is an id this API minted with `prefix`; else None."""
    return store.get(key(value)) if minted(prefix, value) else None
