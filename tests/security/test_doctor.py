"""`atelier doctor` shows where each service is without its secrets: a DATABASE_URL's password (URL or libpq
key/value form, in the userinfo or the query), and the userinfo of any service URL, are masked in the table.
(The chat's Services tab shows the same checks: tests/security/test_chat.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.cli.main import main as atelier

SECRET = "hunter2-doctor"


def _doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run `atelier doctor` in-process: (exit code, everything it printed)."""
    try:
        atelier(["doctor"])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("dsn", [
    "{db} password={secret}",  # libpq key/value, as the machine's database is named
    "postgresql://postgres:{secret}@127.0.0.1:9/atelier?sslpassword={secret}",  # a URL, to a server that is down
])
def test_doctor_prints_no_password(dsn: str, machine_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # one line per row: a secret cannot hide by wrapping
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", dsn.format(db=machine_pg_url, secret=SECRET))
    monkeypatch.setenv("COMFYUI_URLS", f"http://comfy:{SECRET}@127.0.0.1:9")
    monkeypatch.setenv("OLLAMA_URL", f"http://{SECRET}@127.0.0.1:9")
    monkeypatch.setenv("QDRANT_URL", f"http://127.0.0.1:9/?api_key={SECRET}")
    code, said = _doctor(capsys)
    assert code == 1, said  # ComfyUI is down
    assert SECRET not in said, said
    assert "http://comfy:***@127.0.0.1:9" in said and "http://***@127.0.0.1:9" in said, said
    assert "api_key=***" in said, said
    assert ("password=***" in said) if dsn.startswith("{db}") else ("postgres:***@127.0.0.1:9" in said), said


@pytest.mark.parametrize(("shown", "masked"), [
    ("postgresql://atelier:pw@db:5432/atelier", "postgresql://atelier:***@db:5432/atelier"),
    ("postgresql://atelier@db/atelier?password=pw&sslmode=require",
     "postgresql://atelier@db/atelier?password=***&sslmode=require"),  # a database's role name stays
    ("host=db user=atelier password='p w' dbname=atelier", "host=db user=atelier password=*** dbname=atelier"),
    ("https://token@comfy.example/", "https://***@comfy.example/"),  # a lone userinfo is a credential
    ("ComfyUI at http://u:pw@gpu:8188 is unreachable", "ComfyUI at http://u:***@gpu:8188 is unreachable"),
    ("http://gpu:8188/view?filename=a@b.png", "http://gpu:8188/view?filename=a@b.png"),  # no userinfo there
    ("embedded: /data/postgres", "embedded: /data/postgres"),
])
def test_what_is_masked(shown: str, masked: str) -> None:
    from atelier.tools.doctor import ServiceCheck, mask_secrets

    assert mask_secrets(shown) == masked
    check = ServiceCheck("X", shown, False, True, details=[shown], hint=shown)
    assert check.url == check.hint == check.details[0] == masked
