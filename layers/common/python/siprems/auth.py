"""Access tokens: HS256 JWTs with the original system's claims.

Claims: ``user_id``, ``email``, ``type`` ("access"; refresh tokens are refused), ``iat``,
``exp`` and an optional ``role`` ("admin" may train every product and handle the DLQ).
Only HS256 is accepted: ``alg: none``, RS256 and every other algorithm are refused, which also
closes the classic key-confusion attack.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from siprems.errors import UnauthorizedError

ALGORITHM = "HS256"
ACCESS = "access"
ADMIN = "admin"
REQUIRED_CLAIMS = ["user_id", "email", "type", "iat", "exp"]

# Routes only an admin may call: (method, resource path), "*" matching anything as in the
# authorizer's IAM policy. The authorizer denies them to other callers, the handlers check the
# role again, and the OpenAPI document marks them.
ADMIN_ROUTES = (("POST", "/api/tasks/training/all"), ("*", "/api/admin/*"))


def is_admin_route(method: str, path: str) -> bool:
    return any(
        fnmatch.fnmatchcase(method.upper(), m) and fnmatch.fnmatchcase(path, p)
        for m, p in ADMIN_ROUTES
    )


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str
    role: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def context(self) -> dict[str, str]:
        """The authorizer context passed to backends (API Gateway allows strings only)."""
        return {"user_id": self.user_id, "email": self.email, "role": self.role or "user"}

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | None) -> Principal | None:
        if not context or not context.get("user_id"):
            return None
        role = context.get("role")
        return cls(
            user_id=str(context["user_id"]),
            email=str(context.get("email", "")),
            role=None if role in (None, "", "user") else str(role),
        )


# Tolerance on a token's time claims: a fresh token from a login service whose clock runs a
# second ahead has an iat "in the future", which PyJWT refuses without it.
CLOCK_SKEW_SECONDS = 30


def mint_token(
    secret: str,
    *,
    user_id: str | int,
    email: str,
    role: str | None = None,
    token_type: str = ACCESS,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "user_id": user_id,
        "email": email,
        "type": token_type,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    if role:
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_access_token(token: str, secret: str, *, leeway: int = CLOCK_SKEW_SECONDS) -> Principal:
    """The principal of a valid access token; UnauthorizedError for anything else. Its time
    claims (iat, nbf, exp) hold within ``leeway`` seconds: tokens come from the login
    service, whose clock may run a little ahead of or behind this one."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise UnauthorizedError("malformed token") from exc
    if header.get("alg") != ALGORITHM:
        raise UnauthorizedError(f"token algorithm {header.get('alg')!r} is not accepted")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=leeway,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise UnauthorizedError("token expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise UnauthorizedError("bad token signature") from exc
    except jwt.PyJWTError as exc:
        raise UnauthorizedError(f"invalid token: {exc}") from exc
    if claims.get("type") != ACCESS:
        raise UnauthorizedError(f"a {claims.get('type')!r} token is not an access token")
    if not claims.get("user_id") or not claims.get("email"):
        raise UnauthorizedError("token without user")
    role = claims.get("role")
    return Principal(
        user_id=str(claims["user_id"]),
        email=str(claims["email"]),
        role=str(role) if role else None,
    )


def bearer_token(headers: Mapping[str, Any] | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (any header name case)."""
    value = None
    for name, header in (headers or {}).items():
        if name.lower() == "authorization":
            value = header
            break
    if not value or not isinstance(value, str):
        raise UnauthorizedError("missing Authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Authorization header is not 'Bearer <token>'")
    return token.strip()
