"""Who may talk to the studio: loopback by default, a Bearer token, and checks against CSRF and DNS rebinding.

- ``check_bind``: a non-loopback ``--host`` without ``--token`` refuses to start.
- ``Guard`` (ASGI middleware, HTTP and WebSocket):
  - Host must name this server (loopback names, or the bound host): a DNS-rebinding page's
    Host is its own domain, so it gets 403. Bound to every address (0.0.0.0, ::), the server
    cannot know all its names: any Host passes, and the token (required there) guards it;
  - Origin, when sent, must be this server's own origin (scheme://Host); ``null`` is refused;
  - Sec-Fetch-Site, when sent, must be ``same-origin`` or ``none`` for the API (a cross-site
    form POST or fetch gets 403 even where Origin is missing);
  - with a token, every ``/api`` route needs ``Authorization: Bearer TOKEN`` (401 without);
    a browser's WebSocket cannot set headers, so it may send the token as the subprotocol
    pair ``bearer, TOKEN``. The page shell (``/`` and ``/static``, no data) is public: it asks
    for the token, which never appears in a URL the server sees (``#token=`` stays in the browser).
  No CORS headers are ever sent, so other origins cannot read responses either.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from latentzoo.core.contract.errors import LatentzooError

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
# Every response: no framing by other sites (clickjacking), no MIME sniffing, no referrer, and a
# content policy that lets the page load and talk to this origin only (its scripts are files, never inline).
HARDENING = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


WILDCARDS = {"0.0.0.0", "::", ""}


def allowed_hosts(host: str) -> set[str]:
    """The Host names a server bound to ``host`` answers to ("*": any, for a wildcard bind)."""
    return {"*"} if host in WILDCARDS else {host}


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token (the classroom-miner case)."""
    if not is_loopback(host) and not token:
        raise LatentzooError(
            f"--host {host} listens beyond this machine, and without --token anyone who reaches it runs jobs; "
            "give --token SECRET (or LATENTZOO_STUDIO_TOKEN), or keep the default --host 127.0.0.1"
        )


def _hostname(netloc: str) -> str:
    """'localhost:8000' -> 'localhost'; '[::1]:8000' -> '::1'."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")].lower()
    return netloc.rsplit(":", 1)[0].lower() if netloc.count(":") == 1 else netloc.lower()


class Guard:
    """ASGI middleware applying the checks in the module docstring."""

    def __init__(self, app: Any, *, token: str | None, allowed_hosts: set[str]) -> None:
        self.app, self.token = app, token
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts} | LOOPBACK_NAMES

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.refusal(scope, headers)
        if refusal is None:
            if scope["type"] == "websocket":
                return await self.app(scope, receive, send)

            async def send_hardened(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), *HARDENING]
                await send(message)

            return await self.app(scope, receive, send_hardened)
        status, error, fix = refusal
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4401 if status == 401 else 4403, "reason": error[:120]})
            return
        body = json.dumps({"error": error, "fix": fix}).encode()
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = headers.get("host", "")
        if "*" not in self.allowed_hosts and _hostname(host) not in self.allowed_hosts:
            return 403, f"host {host!r} is not this server", "open the studio by its own address (http://127.0.0.1:PORT)"
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if origin == "null" or parts.netloc.lower() != host.lower():
                return 403, f"cross-origin request from {origin!r} refused", "use the studio's own page, or a client that sends no Origin"
        path = scope.get("path", "")
        api = path.startswith("/api/")
        site = headers.get("sec-fetch-site")
        if api and site is not None and site not in ("same-origin", "none"):
            return 403, f"{site} request refused", "use the studio's own page, or a client that is not a browser"
        if api and self.token and not self._authorized(scope, headers):
            return (
                401,
                "missing or wrong bearer token",
                "send the header 'Authorization: Bearer TOKEN' (the --token the server was started with)",
            )
        return None

    def _authorized(self, scope: dict[str, Any], headers: dict[str, str]) -> bool:
        given = ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        elif scope["type"] == "websocket":
            protocols = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
            if len(protocols) == 2 and protocols[0] == "bearer":
                given = protocols[1]
        return bool(given) and hmac.compare_digest(given.encode(), (self.token or "").encode())
