"""HTTP engines behind one interface: ``fast`` (trio + llhttp) and ``httpx``.

:func:`make_client` builds the engine a profile asks for; everything else talks to the
:class:`~harness.client.base.Client` protocol only.
"""

from __future__ import annotations

import ssl

from ..errors import UsageError
from ..profile.model import HttpSettings
from .base import Client, Origin, Request, Result, make_ssl_context
from .cookies import CookieJar
from .fast import FastClient

ENGINES = ("fast", "httpx")

__all__ = [
    "ENGINES",
    "Client",
    "CookieJar",
    "FastClient",
    "Origin",
    "Request",
    "Result",
    "make_client",
    "make_ssl_context",
]


def make_client(
    engine: str, origin: Origin, http: HttpSettings, ssl_context: ssl.SSLContext | None
) -> Client:
    """One client for one VU.

    ``ssl_context`` is the worker's shared context (:func:`make_ssl_context`), used by
    the fast engine for https; the httpx engine builds its own from
    ``http.verify_tls``.
    """
    if engine == "fast":
        unsupported = [
            name
            for name, used in (("http2", http.http2), ("proxy", http.proxy is not None))
            if used
        ]
        if unsupported:
            raise UsageError(
                f"http.{unsupported[0]} is set but the fast engine supports neither "
                "HTTP/2 nor proxies; set http.engine: httpx, or remove "
                f"http.{unsupported[0]}"
            )
        return FastClient(
            origin,
            connect_timeout_s=http.connect_timeout_s,
            timeout_s=http.timeout_s,
            ssl_context=ssl_context,
            # A Host among the default headers names a virtual host; the flow puts
            # it in every request, so the client must not add its own.
            send_host=not any(name.lower() == "host" for name, _ in http.headers),
        )
    if engine == "httpx":
        # Imported here: httpx costs a noticeable start-up time and most runs use
        # the fast engine.
        from .httpx_engine import HttpxClient

        return HttpxClient(
            origin,
            connect_timeout_s=http.connect_timeout_s,
            timeout_s=http.timeout_s,
            verify_tls=http.verify_tls,
            http2=http.http2,
            proxy=http.proxy,
        )
    raise UsageError(
        f"unknown http engine {engine!r}; use one of: {', '.join(ENGINES)}"
    )
