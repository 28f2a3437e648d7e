"""Who may reach a server: the listen-address rule of local mode, and the hosts and web origins servers answer.

- Local mode (ATELIER_AUTH=local) has no login: whoever reaches a server is its admin. So a server asked to
  listen beyond loopback in local mode refuses to start (`check_listen_address`) unless the person said so
  loudly (`--allow-unauthenticated` / ATELIER_ALLOW_UNAUTHENTICATED), and then it says what that means.
- A web page on another origin must not drive a server through the user's browser: requests naming a DNS
  host other than loopback ones and ATELIER_ALLOWED_HOSTS are refused (DNS rebinding), and a request whose
  `Origin` is neither the server itself, Atelier's own chat page, nor ATELIER_ALLOWED_ORIGINS is refused
  (`host_allowed`, `origin_allowed`; the HTTP guard in atelier/api/guard.py applies them).
"""

from __future__ import annotations

import ipaddress
import logging

from atelier.tools.errors import SettingsError
from atelier.tools.settings import Settings

__all__ = ["LOOPBACK_NAMES", "check_listen_address", "host_allowed", "is_loopback", "is_remote_client",
           "origin_allowed", "own_origins"]

log = logging.getLogger("atelier.exposure")

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _bare(host: str) -> str:
    """A host without brackets, port or trailing dot, lower-cased."""
    text = host.strip().lower()
    if text.startswith("["):  # [::1]:8000
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:  # name:port or v4:port
        text = text.split(":", 1)[0]
    return text.rstrip(".")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host literal names (None for a DNS name)."""
    try:
        return ipaddress.ip_address(_bare(host))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether a listen address or host name stays on this machine (127.0.0.0/8, ::1, localhost)."""
    bare = _bare(host)
    address = _ip(bare)
    return address.is_loopback if address is not None else bare in LOOPBACK_NAMES or bare.endswith(".localhost")


def is_remote_client(address: str) -> bool:
    """Whether a connection's peer address is another machine (an IP that is not loopback)."""
    ip = _ip(address)
    return ip is not None and not ip.is_loopback


def check_listen_address(host: str, settings: Settings, *, server: str, allow_unauthenticated: bool = False) -> None:
    """Refuse to serve beyond loopback without accounts (SettingsError saying how to turn them on).

    With the override it logs, loudly, that anyone who can reach the address is an admin.
    """
    if settings.auth_mode == "accounts" or is_loopback(host):
        return
    if allow_unauthenticated or settings.allow_unauthenticated:
        log.warning("%s listens on %s WITHOUT AUTHENTICATION (ATELIER_AUTH=local): anyone who can reach this "
                    "address acts as the admin — reads every file Atelier keeps and spends your GPU. Turn accounts "
                    "on instead: ATELIER_AUTH=accounts and `atelier users add NAME --admin`.", server, host)
        return
    raise SettingsError(
        f"{server} will not listen on {host} in local mode (ATELIER_AUTH=local has no login: anyone who reaches it "
        "would be the admin). Listen on 127.0.0.1 and put a TLS proxy in front, or turn accounts on: set "
        "ATELIER_AUTH=accounts and make a first admin with `atelier users add NAME --admin` (docs/security.md). "
        "To serve without a login anyway, pass --allow-unauthenticated (or ATELIER_ALLOW_UNAUTHENTICATED=true)."
    )


def host_allowed(host_header: str | None, settings: Settings) -> bool:
    """Whether a request's Host may be answered: loopback names, IP literals and ATELIER_ALLOWED_HOSTS.

    A DNS name that is none of these is what a DNS-rebinding page sends; IP literals cannot be rebound.
    """
    if not host_header:
        return False
    bare = _bare(host_header)
    return is_loopback(bare) or _ip(bare) is not None or bare in settings.allowed_hosts


def own_origins(settings: Settings) -> set[str]:
    """Atelier's own pages: the chat, on the loopback names it answers to, plus ATELIER_ALLOWED_ORIGINS."""
    port = settings.chat_port
    found = {f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"}
    if not is_loopback(settings.chat_host) and settings.chat_host not in ("0.0.0.0", "::", ""):
        found.add(f"http://{settings.chat_host}:{port}")
    return found | set(settings.allowed_origins)


def origin_allowed(origin: str | None, host_header: str | None, scheme: str, settings: Settings) -> bool:
    """Whether a request's `Origin` may call: none at all (not a browser), the server itself, or an allowed one."""
    if origin is None:
        return True
    value = origin.strip().lower().rstrip("/")
    if host_header and value == f"{scheme}://{host_header.strip().lower()}":
        return True  # same origin: the page this server served
    return value in own_origins(settings)
