"""The local output store writes atomically under its root, round-trips bytes and refuses escaping keys."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pydantic
import pytest

from atelier.tools.errors import AtelierError
from atelier.tools.outputs.store import (
    LocalOutputStore,
    OutputStore,
    OutputStoreError,
    S3OutputStore,
    StoredFile,
    build_output_store,
    output_key,
)
from atelier.tools.settings import load_settings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
KEY = "jobs/2026/11/25/0b7f_00.png"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def store(root: Path) -> LocalOutputStore:
    return LocalOutputStore(root)


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_put_writes_the_bytes_and_describes_them(store: LocalOutputStore, root: Path) -> None:
    stored = store.put(KEY, PNG)
    target = root / KEY
    assert target.read_bytes() == PNG
    assert stored == StoredFile(
        uri=target.resolve().as_uri(), key=KEY, size=len(PNG), sha256=hashlib.sha256(PNG).hexdigest(),
        content_type="image/png",
    )
    assert stored.uri.startswith("file:///")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with pytest.raises(pydantic.ValidationError):  # frozen
        stored.size = 1  # type: ignore[misc]


def test_read_exists_and_link_round_trip(store: LocalOutputStore, root: Path) -> None:
    stored = store.put(KEY, PNG, content_type="image/webp")
    assert stored.content_type == "image/webp"
    assert store.read(stored.uri) == PNG
    assert store.exists(stored.uri)
    link = store.link(stored.uri)
    assert Path(link).is_absolute() and link == str((root / KEY).resolve())
    assert Path(link).read_bytes() == PNG


def test_same_key_twice_is_one_file_with_the_last_bytes(store: LocalOutputStore, root: Path) -> None:
    first = store.put(KEY, b"first attempt")
    second = store.put(KEY, PNG)
    assert first.uri == second.uri
    assert _all_files(root) == [root / KEY]
    assert store.read(second.uri) == PNG
    assert second.size == len(PNG) and second.sha256 == hashlib.sha256(PNG).hexdigest()


def test_write_goes_through_a_temp_file_in_the_same_folder(
    store: LocalOutputStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves: list[tuple[Path, Path]] = []
    real_replace: Callable[..., None] = os.replace

    def spy(src: str, dst: str | Path) -> None:
        moves.append((Path(src), Path(dst)))
        assert Path(src).read_bytes() == PNG  # complete before it becomes visible
        assert not Path(dst).exists()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    store.put(KEY, PNG)
    [(src, dst)] = moves
    assert dst == root / KEY and src.parent == dst.parent and src != dst
    assert _all_files(root) == [root / KEY]


def test_a_crash_before_the_rename_keeps_the_old_file_and_leaves_no_temp_file(
    store: LocalOutputStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = store.put(KEY, b"old, complete")

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OutputStoreError, match="No space left"):
        store.put(KEY, PNG)
    assert store.read(stored.uri) == b"old, complete"
    assert _all_files(root) == [root / KEY]


def test_an_interrupt_mid_write_removes_the_temp_file_and_propagates(
    store: LocalOutputStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put(KEY, PNG)
    assert _all_files(root) == []


@pytest.mark.parametrize(
    "key",
    ["../escape.png", "jobs/../../escape.png", "/etc/passwd", "/tmp/escape.png", "a\\..\\b.png", "C:/x.png",
     "", "   ", "jobs/", ".", "..", "a\x00b.png"],
)
def test_keys_that_escape_or_name_no_file_are_refused(store: LocalOutputStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(OutputStoreError) as info:
        store.put(key, PNG)
    assert repr(key) in str(info.value)
    assert isinstance(info.value, AtelierError)
    assert _all_files(tmp_path) == []


def test_dot_segments_and_double_slashes_are_normalised_inside_the_root(store: LocalOutputStore, root: Path) -> None:
    stored = store.put("./jobs//x/./a.png", PNG)
    assert stored.key == "jobs/x/a.png"
    assert (root / "jobs" / "x" / "a.png").read_bytes() == PNG


def test_missing_output_does_not_exist_and_reading_it_names_it(store: LocalOutputStore, root: Path) -> None:
    uri = (root / "jobs" / "nope.png").as_uri()
    assert not store.exists(uri)
    with pytest.raises(OutputStoreError) as info:
        store.read(uri)
    assert uri in str(info.value)


def test_a_folder_is_not_an_output(store: LocalOutputStore, root: Path) -> None:
    store.put(KEY, PNG)
    uri = (root / "jobs").as_uri()
    assert not store.exists(uri)
    with pytest.raises(OutputStoreError, match="cannot read"):
        store.read(uri)


def test_non_file_uris_are_refused(store: LocalOutputStore) -> None:
    for uri in ("s3://bucket/key.png", "http://host/x.png", "file://otherhost/x.png", "jobs/x.png"):
        with pytest.raises(OutputStoreError) as info:
            store.read(uri)
        assert repr(uri) in str(info.value)


def test_uris_with_spaces_and_unicode_round_trip(store: LocalOutputStore) -> None:
    stored = store.put("jobs/a b/été #1.png", PNG)
    assert " " not in stored.uri and "#" not in stored.uri
    assert store.read(stored.uri) == PNG and store.exists(stored.uri)
    assert store.link(stored.uri).endswith("/jobs/a b/été #1.png")


def test_describe_names_the_folder(store: LocalOutputStore, root: Path) -> None:
    assert store.describe() == f"folder {root.resolve()}"
    assert isinstance(store, OutputStore)


def test_unwritable_root_is_an_output_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputStoreError, match="ATELIER_OUTPUT_DIR"):
        LocalOutputStore(blocker).put(KEY, PNG)


def test_output_key_is_deterministic_per_job_and_index() -> None:
    created = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    assert output_key("0b7f", 0, when=created) == "jobs/2026/11/25/0b7f_00.png"
    assert output_key("0b7f", 3, ".webp", when=created) == "jobs/2026/11/25/0b7f_03.webp"
    assert output_key("0b7f", 12, "jpg", when=created) == "jobs/2026/11/25/0b7f_12.jpg"
    assert output_key("0b7f", 0, when=created) == output_key("0b7f", 0, when=created)


def test_output_key_uses_the_utc_date() -> None:
    tokyo = timezone(timedelta(hours=9))
    created = datetime(2026, 11, 26, 8, 30, tzinfo=tokyo)  # 2026-11-25 23:30 UTC
    assert output_key("j", 1, when=created) == "jobs/2026/11/25/j_01.png"
    before = datetime.now(UTC).date()
    key = output_key("j", 1)
    after = datetime.now(UTC).date()
    assert key in {f"jobs/{d:%Y/%m/%d}/j_01.png" for d in (before, after)}


@pytest.mark.parametrize("job_id", ["", "a/b", "..", "a\\b"])
def test_output_key_refuses_job_ids_that_are_not_one_name(job_id: str) -> None:
    with pytest.raises(OutputStoreError):
        output_key(job_id, 0)


def test_output_key_refuses_a_negative_index() -> None:
    with pytest.raises(OutputStoreError):
        output_key("j", -1)


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("ATELIER_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.usefixtures("clean_settings_env")
def test_build_output_store_without_a_bucket_is_the_outputs_folder(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    store = build_output_store(settings)
    assert isinstance(store, LocalOutputStore)
    assert store.root == (tmp_path / "data" / "outputs").resolve()
    stored = store.put(KEY, PNG)
    assert (tmp_path / "data" / "outputs" / KEY).read_bytes() == PNG
    assert store.read(stored.uri) == PNG


@pytest.mark.usefixtures("clean_settings_env")
def test_build_output_store_with_a_bucket_is_s3_configured_from_settings(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", s3_bucket="renders", s3_endpoint_url="http://127.0.0.1:9/",
        s3_prefix="studio", s3_region="eu-west-1", s3_access_key="AKIDEXAMPLE", s3_secret_key="s3cret",
        s3_link_seconds=120,
    )
    store = build_output_store(settings)  # no request is made until the first call
    assert isinstance(store, S3OutputStore)
    assert store.describe() == "s3://renders/studio/ at http://127.0.0.1:9"
    assert "s3cret" not in store.describe()
    link = store.link("s3://renders/studio/jobs/x.png")  # presigning is local
    query = parse_qs(urlsplit(link).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/") and "/eu-west-1/s3/" in query["X-Amz-Credential"][0]


@pytest.mark.usefixtures("clean_settings_env")
def test_build_output_store_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_S3_BUCKET", "from-env")
    monkeypatch.setenv("ATELIER_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    store = build_output_store(load_settings())
    assert isinstance(store, S3OutputStore)
    assert store.describe() == "s3://from-env/atelier/ at http://minio:9000"
    assert "X-Amz-Credential=AKIDENV%2F" in store.link("s3://from-env/atelier/a.png")


def test_s3_store_refuses_half_a_key_pair() -> None:
    with pytest.raises(OutputStoreError, match="ATELIER_S3_SECRET_KEY"):
        S3OutputStore("bucket", endpoint_url="http://127.0.0.1:9", access_key="AKID")
