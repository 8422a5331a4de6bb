"""Bearer tokens: JWT signed with HS256 and a shared secret.

The token's subject is the caller's user name, which is the ``owner`` of the jobs it
creates; an ``operator`` claim set to true lets the caller see and act on every job.
Tokens must carry an expiry. Only HS256 is accepted, so an unsigned token
(``alg: none``) or one signed with another algorithm or secret is refused.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from errands.protocol import ErrorCode
from errands.sync.errors import Unauthorized

ALGORITHM = "HS256"
DEFAULT_TOKEN_LIFETIME = 24 * 3600
"""Seconds a token made by :func:`make_token` stays valid unless told otherwise."""
INSECURE_USER = "local"
"""The one user of a service started with ``--insecure``."""
MAX_USER_LENGTH = 200
VERIFIED_TOKENS = 10_000
EXPIRED = "the token has expired; get a new one (errands token)"
RECOMMENDED_SECRET_BYTES = 32
"""RFC 7518 asks for an HS256 key at least as long as the hash; ``errands server``
warns about a shorter secret once, at start-up, instead of PyJWT on every token."""


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user, and whether it is an operator."""

    user: str
    operator: bool = False
    expires_at: float = field(default=math.inf, compare=False)

    @property
    def owner_filter(self) -> str | None:
        """The owner whose rows the caller may see, or None for every row."""
        return None if self.operator else self.user


def make_token(
    secret: str, user: str, *, operator: bool = False, expires_in: float = DEFAULT_TOKEN_LIFETIME
) -> str:
    """A signed token for ``user``, valid for ``expires_in`` seconds."""
    if not 0 < len(user) <= MAX_USER_LENGTH or "\x00" in user:
        raise ValueError(f"the user name must have 1 to {MAX_USER_LENGTH} characters, no NUL")
    now = int(time.time())
    claims = {"sub": user, "operator": operator, "iat": now, "exp": now + int(expires_in)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Caller:
    """The caller a token names; :class:`Unauthorized` if it is not valid now."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims = jwt.decode(
                token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
            )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(EXPIRED, ErrorCode.TOKEN_EXPIRED) from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"the token is not valid: {exc}") from None
    user = claims["sub"]
    operator = claims.get("operator", False)
    if not isinstance(user, str) or not 0 < len(user) <= MAX_USER_LENGTH or "\x00" in user:
        raise Unauthorized("the token's subject must be a user name")
    if not isinstance(operator, bool):
        raise Unauthorized("the token's operator claim must be true or false")
    return Caller(user, operator, float(claims["exp"]))


class Authenticator:
    """Turns a request's bearer token into a :class:`Caller`."""

    def __init__(self, secret: str | None, *, insecure: bool = False) -> None:
        if not insecure and not secret:
            raise ValueError("a secret is required unless the service runs insecure")
        self.secret = secret
        self.insecure = insecure
        # Clients send the same token with every request: check each one once.
        self._verified: dict[str, Caller] = {}

    def caller(self, token: str | None) -> Caller:
        """The caller of a request carrying ``token`` (None: no Authorization header)."""
        if self.insecure:
            return Caller(INSECURE_USER)
        assert self.secret is not None
        if not token:
            raise Unauthorized("send a bearer token: Authorization: Bearer <token>")
        caller = self._verified.get(token)
        if caller is None:
            caller = verify_token(self.secret, token)
            if len(self._verified) >= VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[token] = caller
        if caller.expires_at <= time.time():
            del self._verified[token]
            raise Unauthorized(EXPIRED, ErrorCode.TOKEN_EXPIRED)
        return caller
