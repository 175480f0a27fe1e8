"""Accounts, passwords and bearer tokens of the annotation service.

Passwords are stored as salted PBKDF2-SHA256; tokens are random (32 bytes, URL-safe) and only
their SHA-256 is stored, with an expiry. Roles are ordered: annotator < reviewer < admin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from activesynth.service.db import ROLES, TokenRow, UserRow, utcnow
from activesynth.service.store import RequestError

_ITERATIONS = 120_000


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _ITERATIONS)
    return f"pbkdf2_sha256${_ITERATIONS}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, iters, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iters))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


@dataclass(frozen=True)
class Caller:
    """Who is making a request (``user`` "anonymous" with role admin when auth is off)."""

    user: str
    role: str
    authenticated: bool

    def has(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise RequestError(400, f"role {role!r} is unknown; use one of {', '.join(ROLES)}.")
    return role


def create_user(s: Session, name: str, password: str, role: str) -> UserRow:
    from activesynth.service.store import check_id

    check_id(name, "user name")
    check_role(role)
    if len(password) < 8:
        raise RequestError(400, f"the password of {name!r} is too short; use 8 characters or more.")
    if s.get(UserRow, name) is not None:
        raise RequestError(409, f"user {name!r} exists already.")
    row = UserRow(name=name, role=role, password_hash=hash_password(password), created_at=utcnow())
    s.add(row)
    return row


def issue_token(sessions: sessionmaker, name: str, password: str, hours: float) -> str:
    """A new token for ``name`` (401 on a wrong name or password, without saying which)."""
    from activesynth.service.store import check_id

    try:
        check_id(name, "user name")  # never a lookup of a NUL or an overlong name
    except RequestError:
        raise RequestError(401, "wrong user name or password.") from None
    with sessions.begin() as s:
        user = s.get(UserRow, name)
        if user is None or not check_password(password, user.password_hash):
            raise RequestError(401, "wrong user name or password.")
        token = secrets.token_urlsafe(32)
        s.add(
            TokenRow(
                token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                user=name,
                created_at=utcnow(),
                expires_at=utcnow() + dt.timedelta(hours=hours),
            )
        )
    return token


def caller_of(sessions: sessionmaker, authorization: str | None) -> Caller | None:
    """The caller of an ``Authorization: Bearer <token>`` header, or None if missing/invalid."""
    if not authorization:
        return None
    parts = authorization.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    digest = hashlib.sha256(parts[1].strip().encode()).hexdigest()
    with sessions() as s:
        tok = s.get(TokenRow, digest)
        if tok is None or tok.expires_at <= utcnow():
            return None
        user = s.get(UserRow, tok.user)
        if user is None:
            return None
        return Caller(user.name, user.role, True)
