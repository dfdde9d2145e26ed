"""Who may look and who may act: exposure rules, HTTP Basic auth, CSRF tokens, safe headers.

The dashboard shows task arguments (user data) and can retry, cancel and purge,
so it is closed by default:

- **Exposure.** Bound to a loopback address it answers this machine only; any
  other address needs credentials (``--auth USER:PASSWORD`` or the
  ``OMNIQ_DASHBOARD_AUTH`` variable, which keeps the password out of the
  process list) unless the operator says ``--insecure``. Without credentials
  on loopback, a request whose ``Host`` is not a loopback name is refused, so
  a web page cannot reach the dashboard through DNS rebinding.
- **Auth.** HTTP Basic, compared in constant time; browsers ask once per session.
- **CSRF.** Every action is a POST carrying the session's token (a random
  value in an HttpOnly, SameSite=Strict cookie, repeated in a hidden field);
  a POST whose field does not match its cookie, or whose ``Origin`` names
  another host, is refused before it reaches the app.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from omniq.errors import ConfigurationError

__all__ = [
    "AUTH_ENV",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "SECURITY_HEADERS",
    "Credentials",
    "check_exposure",
    "is_loopback",
    "new_token",
    "origin_matches",
    "tokens_match",
]

#: the environment variable holding ``USER:PASSWORD`` when ``--auth`` is not given.
AUTH_ENV = "OMNIQ_DASHBOARD_AUTH"
#: the cookie that holds the session's CSRF token, and the form field that repeats it.
CSRF_COOKIE = "omniq_csrf"
CSRF_FIELD = "csrf"

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})

#: sent with every response: no framing, no sniffing, no referrer to other sites, only our own scripts and styles.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make the browser send Origin: null
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Credentials:
    """A user name and password for HTTP Basic auth (the password never appears in a repr)."""

    user: str
    password: str

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """``USER:PASSWORD`` (the password may hold ``:``).

        Raises:
            ConfigurationError: no ``:``, or an empty user or password.
        """
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise ConfigurationError("dashboard auth must read USER:PASSWORD, both non-empty")
        return cls(user, password)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials (constant-time comparison)."""
        if not authorization:
            return False
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user_ok and password_ok

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password='***')"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a ``Host`` header's name) is this machine only."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, credentials: Credentials | None, insecure: bool) -> None:
    """Refuse to serve on a non-loopback address without credentials, unless told ``insecure``.

    Raises:
        ConfigurationError: naming the address and the two ways out.
    """
    if is_loopback(host) or credentials is not None or insecure:
        return
    raise ConfigurationError(
        f"the dashboard would be open to the network on {host}: give --auth USER:PASSWORD "
        f"(or set {AUTH_ENV}), bind to 127.0.0.1, or pass --insecure to serve it without auth"
    )


def new_token() -> str:
    """A fresh CSRF token for a session."""
    return secrets.token_urlsafe(32)


def tokens_match(cookie: str | None, field: str | None) -> bool:
    """Whether a POST's form token equals its session cookie's (both present; constant time)."""
    if not cookie or not field:
        return False
    return hmac.compare_digest(cookie.encode(), field.encode())


def origin_matches(origin: str | None, host: str | None) -> bool:
    """Whether a request's ``Origin`` header (when sent) names the host it was sent to."""
    if origin is None:
        return True  # older browsers and non-browser clients send none; the token still guards
    if origin == "null" or host is None:
        return False
    _, sep, rest = origin.partition("://")
    return bool(sep) and rest.rstrip("/").lower() == host.lower()
