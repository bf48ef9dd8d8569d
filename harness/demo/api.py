"""The demo target's API: users, sessions, per-user stores and the route table.

Everything here is synchronous and free of I/O, so the HTTP layer can answer a request
without a single checkpoint when no fault is switched on. A handler takes the parsed
request and returns a status and a JSON-ready payload; the HTTP layer encodes it.

Memory stays flat under any load: every per-user list keeps only its newest
:data:`DEFAULT_LIST_CAP` items, and each user keeps at most
:data:`DEFAULT_SESSIONS_PER_USER` live tokens (logging in once more evicts the oldest).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LIST_CAP = 100
"""Items kept per user in each stored list (exchange accounts, automations,
simulations); older ones are dropped. 0 keeps every item."""

DEFAULT_SESSIONS_PER_USER = 20_000
"""Live tokens kept per user. A load test that logs in on every iteration would
otherwise grow the session table without end."""

TOKEN_LIFETIME_S = 3600

Payload = dict[str, Any]
Answer = tuple[int, Payload]


@dataclass(slots=True)
class ApiRequest:
    """What a handler needs from one HTTP request."""

    method: str
    path: str
    authorization: bytes | None
    body: bytes


@dataclass(slots=True)
class User:
    id: int
    email: str
    role: str
    password_sha256: bytes
    exchange_accounts: deque[Payload] = field(default_factory=deque)
    automations: deque[Payload] = field(default_factory=deque)
    simulations: deque[Payload] = field(default_factory=deque)
    sessions: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def public(self) -> Payload:
        return {"id": self.id, "email": self.email, "role": self.role}


SEED_USERS: tuple[tuple[str, str, str], ...] = (
    ("loadtest@example.com", "LoadTest123!", "user"),
    ("admin@example.com", "AdminPassword123!", "admin"),
)
"""Email, password and role of the accounts every demo target starts with."""


def _digest(password: str) -> bytes:
    return hashlib.sha256(password.encode()).digest()


class BadRequest(Exception):
    """The request body is not what the endpoint takes; the message says why."""


def _ok(data: Any, status: int = 200) -> Answer:
    return status, {"success": True, "data": data}


def fail(status: int, message: str) -> Answer:
    return status, {"success": False, "error": message}


def _json_object(body: bytes) -> Payload:
    if not body:
        raise BadRequest("the request needs a JSON object body")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object")
    return value


def _text(obj: Payload, name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"field {name!r} is required and must be a non-empty string")
    return value


def _mask(secret: str) -> str:
    # Show the last four characters of a long key so a user can tell keys apart;
    # a short one shows nothing.
    return "****" + secret[-4:] if len(secret) >= 12 else "****"


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: str
    """``METHOD /path``: the key of this route in the served-request counts."""
    handler: Callable[[DemoApi, User | None, ApiRequest], Answer]
    access: str
    """``public``, ``user`` (any valid token) or ``admin``."""


class DemoApi:
    """The application state and its handlers."""

    def __init__(
        self,
        *,
        list_cap: int = DEFAULT_LIST_CAP,
        sessions_per_user: int = DEFAULT_SESSIONS_PER_USER,
    ) -> None:
        self.list_cap = list_cap
        self.sessions_per_user = sessions_per_user
        self.users: dict[str, User] = {}
        self.tokens: dict[str, User] = {}
        self.logins = 0
        self._next_id = 1
        for email, password, role in SEED_USERS:
            self._add_user(email, password, role)

    def _add_user(self, email: str, password: str, role: str) -> None:
        cap = self.list_cap or None  # 0: keep everything
        user = User(
            id=len(self.users) + 1,
            email=email,
            role=role,
            password_sha256=_digest(password),
            exchange_accounts=deque(maxlen=cap),
            automations=deque(maxlen=cap),
            simulations=deque(maxlen=cap),
        )
        self.users[email] = user

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def authenticate(self, authorization: bytes | None) -> User | None:
        """The user a ``Bearer`` token belongs to, or None if it is missing or dead."""
        if authorization is None or not authorization.startswith(b"Bearer "):
            return None
        token = authorization[7:].strip().decode("latin-1")
        user = self.tokens.get(token)
        if user is None:
            return None
        if user.sessions[token] < time.monotonic():
            self._end_session(user, token)
            return None
        return user

    def _end_session(self, user: User, token: str) -> None:
        user.sessions.pop(token, None)
        self.tokens.pop(token, None)

    # Handlers. Each takes the authenticated user (None on public routes).

    def login(self, _user: User | None, request: ApiRequest) -> Answer:
        body = _json_object(request.body)
        email = _text(body, "email").strip().lower()
        password = _text(body, "password")
        user = self.users.get(email)
        # Compare even for an unknown email, so the answer takes the same time.
        expected = user.password_sha256 if user else _digest("\0")
        if not hmac.compare_digest(_digest(password), expected) or user is None:
            return fail(401, "wrong email or password")
        if len(user.sessions) >= self.sessions_per_user:
            oldest, _ = user.sessions.popitem(last=False)
            self.tokens.pop(oldest, None)
        token = secrets.token_urlsafe(32)
        user.sessions[token] = time.monotonic() + TOKEN_LIFETIME_S
        self.tokens[token] = user
        self.logins += 1
        return _ok(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_S,
                "user": user.public(),
            }
        )

    def logout(self, user: User | None, request: ApiRequest) -> Answer:
        assert user is not None and request.authorization is not None
        token = request.authorization[7:].strip().decode("latin-1")
        self._end_session(user, token)
        return _ok({"logged_out": True})

    def profile(self, user: User | None, _request: ApiRequest) -> Answer:
        assert user is not None
        return _ok(user.public())

    def list_exchange_accounts(self, user: User | None, _r: ApiRequest) -> Answer:
        assert user is not None
        return _ok(list(user.exchange_accounts))

    def add_exchange_account(self, user: User | None, request: ApiRequest) -> Answer:
        assert user is not None
        body = _json_object(request.body)
        exchange = _text(body, "exchange")
        api_key = _text(body, "api_key")
        api_secret = _text(body, "api_secret")
        is_active = body.get("is_active", True)
        if not isinstance(is_active, bool):
            raise BadRequest("field 'is_active' must be true or false")
        # Only the masked forms are kept: the demo never needs the real values back.
        account = {
            "id": self._new_id(),
            "exchange": exchange,
            "api_key": _mask(api_key),
            "api_secret": "********" if api_secret else "",
            "is_active": is_active,
            "created_at": time.time(),
        }
        user.exchange_accounts.append(account)
        return _ok(account, 201)

    def _named_item(self, request: ApiRequest) -> Payload:
        body = _json_object(request.body)
        name = _text(body, "name")
        kind = _text(body, "type")
        config = body.get("config", {})
        if not isinstance(config, dict):
            raise BadRequest("field 'config' must be a JSON object")
        return {
            "id": self._new_id(),
            "name": name,
            "type": kind,
            "config": config,
            "created_at": time.time(),
        }

    def list_automations(self, user: User | None, _r: ApiRequest) -> Answer:
        assert user is not None
        return _ok(list(user.automations))

    def add_automation(self, user: User | None, request: ApiRequest) -> Answer:
        assert user is not None
        item = self._named_item(request)
        item["status"] = "active"
        user.automations.append(item)
        return _ok(item, 201)

    def list_simulations(self, user: User | None, _r: ApiRequest) -> Answer:
        assert user is not None
        return _ok(list(user.simulations))

    def add_simulation(self, user: User | None, request: ApiRequest) -> Answer:
        assert user is not None
        item = self._named_item(request)
        item["status"] = "queued"
        user.simulations.append(item)
        return _ok(item, 201)

    def admin_dashboard(self, _user: User | None, _r: ApiRequest) -> Answer:
        return _ok(
            {
                "users": len(self.users),
                "active_sessions": len(self.tokens),
                "logins": self.logins,
            }
        )

    def admin_users(self, _user: User | None, _r: ApiRequest) -> Answer:
        return _ok([u.public() for u in self.users.values()])

    def admin_analytics(self, _user: User | None, _r: ApiRequest) -> Answer:
        users = self.users.values()
        return _ok(
            {
                "exchange_accounts": sum(len(u.exchange_accounts) for u in users),
                "automations": sum(len(u.automations) for u in users),
                "simulations": sum(len(u.simulations) for u in users),
            }
        )

    def health(self, _user: User | None, _r: ApiRequest) -> Answer:
        return _ok({"status": "ok"})

    def call(self, route: Route, request: ApiRequest) -> Answer:
        """Check access, then run the route's handler."""
        user = None
        if route.access != "public":
            user = self.authenticate(request.authorization)
            if user is None:
                return fail(401, "missing, invalid or expired bearer token")
            if route.access == "admin" and user.role != "admin":
                return fail(403, "this endpoint needs an admin account")
        try:
            return route.handler(self, user, request)
        except BadRequest as exc:
            return fail(400, str(exc))


def _routes() -> dict[str, dict[str, Route]]:
    table: list[tuple[str, str, Callable[..., Answer], str]] = [
        ("GET", "/healthz", DemoApi.health, "public"),
        ("POST", "/api/auth/login", DemoApi.login, "public"),
        ("POST", "/api/auth/logout", DemoApi.logout, "user"),
        ("GET", "/api/user/profile", DemoApi.profile, "user"),
        ("GET", "/api/user/exchange-accounts", DemoApi.list_exchange_accounts, "user"),
        ("POST", "/api/user/exchange-accounts", DemoApi.add_exchange_account, "user"),
        ("GET", "/api/automations", DemoApi.list_automations, "user"),
        ("POST", "/api/automations", DemoApi.add_automation, "user"),
        ("GET", "/api/simulations", DemoApi.list_simulations, "user"),
        ("POST", "/api/simulations", DemoApi.add_simulation, "user"),
        ("GET", "/api/admin/dashboard", DemoApi.admin_dashboard, "admin"),
        ("GET", "/api/admin/users", DemoApi.admin_users, "admin"),
        ("GET", "/api/admin/analytics", DemoApi.admin_analytics, "admin"),
    ]
    routes: dict[str, dict[str, Route]] = {}
    for method, path, handler, access in table:
        routes.setdefault(path, {})[method] = Route(f"{method} {path}", handler, access)
    return routes


ROUTES: dict[str, dict[str, Route]] = _routes()
"""Path, then method, to route. Paths under ``/_demo/`` are served by the HTTP layer
itself and are not listed here."""
