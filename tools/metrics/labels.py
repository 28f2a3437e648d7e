"""Metric labels that carry no secrets: a server URL shown as scheme://host:port only."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["server_label"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def server_label(url: str) -> str:
    """A server URL as a metric label: scheme://host:port only (credentials, path and query stay out of metrics)."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # an unparsable port or host
        return "invalid-url"
    if not parts.scheme or not host:
        return "invalid-url"
    scheme = parts.scheme.lower()
    port = port if port is not None else _DEFAULT_PORTS.get(scheme)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if port is None else f"{scheme}://{shown}:{port}"
