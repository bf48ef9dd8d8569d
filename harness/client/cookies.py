"""A small cookie jar for one client, which talks to one origin.

Since a client never leaves its origin, ``Domain`` and ``Path`` are ignored: every
cookie the origin sets is sent back on every request. What the jar does honour is
removal and expiry: ``Max-Age`` (zero or negative deletes, positive sets a lifetime,
and it wins over ``Expires``) and ``Expires`` (a past date deletes). Expiry instants
are kept on the monotonic clock (``time.perf_counter_ns``), so a wall-clock jump during
a long run neither revives nor kills cookies.

The ``Cookie`` header value is built once per change, not once per request. A client
reads :attr:`CookieJar.value` directly, and calls :meth:`CookieJar.expire` only when
the clock has passed :attr:`CookieJar.next_expiry_ns`: two attribute reads per request.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

_NEVER = sys.maxsize


class CookieJar:
    """Cookies of one client: name -> value, serialised into one ``Cookie`` header."""

    __slots__ = ("_expiry_ns", "_values", "next_expiry_ns", "value")

    def __init__(self) -> None:
        self._values: dict[bytes, bytes] = {}
        self._expiry_ns: dict[bytes, int] = {}
        self.value = b""
        """The ``Cookie`` header value; ``b""`` when the jar is empty. It may still
        hold a cookie that expired: see :meth:`header`."""
        self.next_expiry_ns = _NEVER
        """Monotonic instant at which the first cookie with a lifetime expires."""

    def __len__(self) -> int:
        return len(self._values)

    def get(self, name: bytes) -> bytes | None:
        return self._values.get(name)

    def header(self, now_ns: int) -> bytes:
        """The ``Cookie`` header value at monotonic instant ``now_ns``; ``b""`` when
        the jar is empty."""
        if now_ns >= self.next_expiry_ns:
            self.expire(now_ns)
        return self.value

    def clear(self) -> None:
        self._values.clear()
        self._expiry_ns.clear()
        self.value = b""
        self.next_expiry_ns = _NEVER

    def expire(self, now_ns: int) -> None:
        """Drop the cookies whose lifetime ended at or before ``now_ns``."""
        for name in [n for n, at in self._expiry_ns.items() if at <= now_ns]:
            del self._expiry_ns[name]
            del self._values[name]
        self._rebuild()

    def set_from_header(self, value: bytes, now_ns: int) -> None:
        """Apply one ``Set-Cookie`` header value received at monotonic ``now_ns``.

        A value without ``name=`` is ignored, as RFC 6265 section 5.2 says.
        """
        pair, _, attributes = value.partition(b";")
        name, eq, cookie_value = pair.partition(b"=")
        name = name.strip()
        if not eq or not name:
            return
        lifetime_ns = _lifetime_ns(attributes) if attributes else None
        if lifetime_ns is not None and lifetime_ns <= 0:
            if self._values.pop(name, None) is not None:
                self._expiry_ns.pop(name, None)
                self._rebuild()
            return
        self._values[name] = cookie_value.strip()
        if lifetime_ns is None:
            self._expiry_ns.pop(name, None)
        else:
            self._expiry_ns[name] = now_ns + lifetime_ns
        self._rebuild()

    def _rebuild(self) -> None:
        self.value = b"; ".join(n + b"=" + v for n, v in self._values.items())
        self.next_expiry_ns = min(self._expiry_ns.values(), default=_NEVER)


def _lifetime_ns(attributes: bytes) -> int | None:
    """Remaining lifetime from ``Max-Age`` or ``Expires``; None for a session cookie."""
    expires: int | None = None
    for attribute in attributes.split(b";"):
        key, _, raw = attribute.partition(b"=")
        key = key.strip().lower()
        if key == b"max-age":
            seconds = _max_age_s(raw.strip())
            if seconds is not None:
                return seconds * 1_000_000_000
        elif key == b"expires" and expires is None:
            expires = _expires_in_ns(raw.strip())
    return expires


def _max_age_s(raw: bytes) -> int | None:
    # RFC 6265 5.2.2: an optional minus sign then digits, anything else is ignored.
    digits = raw[1:] if raw.startswith(b"-") else raw
    if not digits.isdigit():
        return None
    return int(raw)


def _expires_in_ns(raw: bytes) -> int | None:
    try:
        when = parsedate_to_datetime(raw.decode("latin-1"))
    except (ValueError, TypeError, IndexError):
        return None
    if when.tzinfo is None:
        # The asctime form carries no zone; HTTP dates are always GMT.
        when = when.replace(tzinfo=UTC)
    return int((when.timestamp() - time.time()) * 1_000_000_000)
