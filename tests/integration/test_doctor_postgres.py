"""The doctor reads the version of a real PostgreSQL (the machine's server) and reports one that is down."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.tools.doctor import check_postgres

pytestmark = pytest.mark.asyncio


async def test_reachable_server_reports_its_version(tmp_path: Path) -> None:
    check = await check_postgres("postgresql://postgres@127.0.0.1:5432/postgres", tmp_path)
    assert check.ok and check.required, check.hint
    assert check.version.split(".")[0].isdigit()


async def test_down_server_is_required_and_says_why(tmp_path: Path, closed_port_url: str) -> None:
    port = closed_port_url.rsplit(":", 1)[1]
    check = await check_postgres(f"postgresql://postgres:secret@127.0.0.1:{port}/postgres", tmp_path)
    assert not check.ok and check.status == "DOWN"
    assert "secret" not in check.url and "***" in check.url
    assert check.hint


async def test_no_database_url_means_the_embedded_default(tmp_path: Path) -> None:
    check = await check_postgres(None, tmp_path)
    assert check.ok and not check.required and check.url == f"embedded: {tmp_path / 'postgres'}"
