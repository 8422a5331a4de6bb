"""Bearer tokens: JWT signed with HS256 and a shared secret.

The token's subject is the caller's user name, which is the ``owner`` of the jobs it
creates; an ``operator`` claim set to true lets the caller see and act on every job,
and a ``read_only`` claim set to true as well lets it see every job and change none.
Tokens must carry an expiry. Only HS256 is accepted, so an unsigned token
(``alg: none``) or one signed with another algorithm or secret is refused.

User names are what they look like (:func:`user_name`): NFC-normalised, with no control,
format (zero-width, bidirectional overrides), surrogate, private-use, unassigned or
separator characters other than a plain inner space; written in one script (UTS #39's
mixed-script rule: Japanese may mix Han, Hiragana and Katakana, Korean Han and Hangul,
Chinese Han and Bopomofo); and not made only of letters that look like Latin ones
(UTS #39's whole-script confusables, from Unicode's confusables data). ``alice``,
``ali\u202ece\u200b`` and a Cyrillic ``\u0430lice`` can therefore never be two users
that display alike.
"""

from __future__ import annotations

import math
import time
import unicodedata
import warnings
from dataclasses import dataclass, field

import jwt
from confusable_homoglyphs import categories, confusables
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


_SCRIPTS_USED_TOGETHER = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "HANGUL"}),
    frozenset({"HAN", "BOPOMOFO"}),
)
"""Scripts UTS #39 lets one name mix (its "augmented" script sets)."""
_NO_SCRIPT = frozenset({"COMMON", "INHERITED"})


def _check_script(name: str) -> None:
    """``ValueError`` if ``name`` mixes scripts, or could pass for a Latin name."""
    scripts = set(categories.unique_aliases(name)) - _NO_SCRIPT
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in _SCRIPTS_USED_TOGETHER):
        raise ValueError(
            f"a user name is written in one script, not {' and '.join(sorted(scripts))}: "
            "such a name can look like another user's"
        )
    if (
        scripts
        and scripts != {"LATIN"}
        and all(
            not char.isalpha() or confusables.is_confusable(char, preferred_aliases=["latin"])
            for char in name
        )
    ):
        raise ValueError(
            f"every letter of this {scripts.pop()} name looks like a Latin one: it could "
            "pass for another user's name"
        )


def user_name(name: str) -> str:
    """``name`` in NFC; ``ValueError`` saying why if it cannot be a user name."""
    normal = unicodedata.normalize("NFC", name)
    if not 0 < len(normal) <= MAX_USER_LENGTH:
        raise ValueError(f"a user name has 1 to {MAX_USER_LENGTH} characters")
    if normal != normal.strip():
        raise ValueError("a user name may not start or end with a space")
    for char in normal:
        category = unicodedata.category(char)
        if category[0] == "C" or (category[0] == "Z" and char != " "):
            raise ValueError(
                f"a user name may not hold U+{ord(char):04X} ({category}: control, format, "
                "bidirectional, surrogate, private-use, unassigned or separator characters)"
            )
    _check_script(normal)
    return normal


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user, whether it is an operator, and whether a read-only one
    (who sees every job and may change none)."""

    user: str
    operator: bool = False
    expires_at: float = field(default=math.inf, compare=False)
    read_only: bool = False

    @property
    def owner_filter(self) -> str | None:
        """The owner whose rows the caller may see, or None for every row."""
        return None if self.operator else self.user


def make_token(
    secret: str,
    user: str,
    *,
    operator: bool = False,
    expires_in: float = DEFAULT_TOKEN_LIFETIME,
    read_only: bool = False,
) -> str:
    """A signed token for ``user`` (see :func:`user_name`), valid for ``expires_in``
    seconds; ``read_only`` makes an operator's token that may change nothing."""
    if read_only and not operator:
        raise ValueError("read_only is for operators' tokens")
    user = user_name(user)
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user,
        "operator": operator,
        "iat": now,
        "exp": now + int(expires_in),
    }
    if read_only:
        claims["read_only"] = True
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
    operator = claims.get("operator", False)
    try:
        user = user_name(claims["sub"]) if isinstance(claims["sub"], str) else None
    except ValueError as exc:
        raise Unauthorized(f"the token's subject is not a user name: {exc}") from None
    if user is None:
        raise Unauthorized("the token's subject must be a user name")
    read_only = claims.get("read_only", False)
    if not isinstance(operator, bool) or not isinstance(read_only, bool):
        raise Unauthorized("the token's operator and read_only claims must be true or false")
    return Caller(user, operator, float(claims["exp"]), read_only)


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
