"""The S3 output store against a real S3-compatible server on loopback (moto in server mode)."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from atelier.tools.outputs.store import (
    OutputStore,
    OutputStoreError,
    S3OutputStore,
    build_output_store,
    output_key,
)
from atelier.tools.settings import load_settings

LOOPBACK = ("127.0.0.1", "::1", "localhost")
PNG = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"pixels").digest() * 64
ACCESS, SECRET = "AKIAMOTOTESTING", "moto-testing-secret"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on a free loopback port, with dummy credentials and no way to reach real AWS."""
    home = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                     "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
                     "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", str(home / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        strays: list[object] = []
        real_connect = socket.socket.connect

        def loopback_only(sock: socket.socket, address: Any) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
                strays.append(address)
                raise OSError(f"test tried to leave loopback: {address}")
            real_connect(sock, address)

        mp.setattr(socket.socket, "connect", loopback_only)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
        assert strays == [], f"requests left loopback: {strays}"


@pytest.fixture(scope="module")
def raw(endpoint: str) -> Any:
    """A plain boto3 client for looking behind the store's back."""
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket() -> str:
    return f"atelier-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(endpoint: str, bucket: str) -> S3OutputStore:
    return S3OutputStore(bucket, endpoint_url=endpoint, access_key=ACCESS, secret_key=SECRET, link_seconds=300)


def test_put_creates_the_bucket_and_round_trips_the_bytes(store: S3OutputStore, bucket: str, raw: Any) -> None:
    key = output_key("job-1", 0)
    stored = store.put(key, PNG)
    assert stored.uri == f"s3://{bucket}/atelier/{key}"
    assert stored.key == key
    assert stored.size == len(PNG) and stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert stored.content_type == "image/png"
    assert store.read(stored.uri) == PNG
    assert store.exists(stored.uri)
    head = raw.head_object(Bucket=bucket, Key=f"atelier/{key}")
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == len(PNG)
    assert head["Metadata"] == {"sha256": stored.sha256}
    assert raw.get_object(Bucket=bucket, Key=f"atelier/{key}")["Body"].read() == PNG


def test_content_type_is_stored(store: S3OutputStore, bucket: str, raw: Any) -> None:
    stored = store.put("jobs/x.webp", b"RIFF....WEBP", content_type="image/webp")
    assert stored.content_type == "image/webp"
    assert raw.head_object(Bucket=bucket, Key="atelier/jobs/x.webp")["ContentType"] == "image/webp"


def test_same_key_twice_is_one_object_with_the_last_bytes(store: S3OutputStore, bucket: str, raw: Any) -> None:
    first = store.put("jobs/retry.png", b"first attempt")
    second = store.put("jobs/retry.png", PNG)
    assert first.uri == second.uri
    listing = raw.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listing["Contents"]] == ["atelier/jobs/retry.png"]
    assert listing["Contents"][0]["Size"] == len(PNG)
    assert store.read(second.uri) == PNG


def test_presigned_link_downloads_the_object_and_expires(store: S3OutputStore, endpoint: str) -> None:
    stored = store.put("jobs/link.png", PNG)
    link = store.link(stored.uri)
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}" == endpoint  # path-style on the configured endpoint
    assert parts.path == f"/{store.bucket}/atelier/jobs/link.png"
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["300"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Credential"][0].startswith(f"{ACCESS}/")
    response = httpx.get(link, timeout=5, trust_env=False)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"


def test_missing_object_does_not_exist_and_reading_it_names_it(store: S3OutputStore) -> None:
    store.put("jobs/present.png", PNG)
    uri = f"s3://{store.bucket}/atelier/jobs/absent.png"
    assert not store.exists(uri)
    with pytest.raises(OutputStoreError) as info:
        store.read(uri)
    assert uri in str(info.value) and "does not exist" in str(info.value)


def test_missing_bucket_without_create_names_the_bucket_and_the_variable(endpoint: str, bucket: str) -> None:
    store = S3OutputStore(bucket, endpoint_url=endpoint, access_key=ACCESS, secret_key=SECRET, create_bucket=False)
    with pytest.raises(OutputStoreError) as info:
        store.put("jobs/a.png", PNG)
    message = str(info.value)
    assert bucket in message and endpoint in message and "ATELIER_S3_BUCKET" in message
    assert not store.exists(f"s3://{bucket}/atelier/jobs/a.png")
    with pytest.raises(OutputStoreError, match="ATELIER_S3_BUCKET"):
        store.read(f"s3://{bucket}/atelier/jobs/a.png")


def test_bucket_outside_us_east_1_is_created_in_its_region(endpoint: str, bucket: str, raw: Any) -> None:
    store = S3OutputStore(
        bucket, endpoint_url=endpoint, region="eu-west-1", prefix="/studio", access_key=ACCESS, secret_key=SECRET
    )
    stored = store.put("jobs/eu.png", PNG)
    assert stored.uri == f"s3://{bucket}/studio/jobs/eu.png"
    assert raw.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    assert store.read(stored.uri) == PNG


def test_an_existing_bucket_is_reused(endpoint: str, bucket: str, raw: Any) -> None:
    raw.create_bucket(Bucket=bucket)
    raw.put_object(Bucket=bucket, Key="other/kept.txt", Body=b"kept")
    store = S3OutputStore(bucket, endpoint_url=endpoint, prefix="", access_key=ACCESS, secret_key=SECRET)
    stored = store.put("a.png", PNG)
    assert stored.uri == f"s3://{bucket}/a.png"
    assert sorted(o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]) == ["a.png", "other/kept.txt"]


def test_escaping_keys_are_refused_before_any_request(store: S3OutputStore) -> None:
    for key in ("../x.png", "/abs.png", "jobs/../../x.png"):
        with pytest.raises(OutputStoreError) as info:
            store.put(key, PNG)
        assert repr(key) in str(info.value)


def test_unreachable_endpoint_fails_quickly_naming_it(closed_port_url: str, endpoint: str) -> None:
    store = S3OutputStore("atelier-down", endpoint_url=closed_port_url, access_key=ACCESS, secret_key=SECRET)
    started = time.monotonic()
    with pytest.raises(OutputStoreError) as info:
        store.put("jobs/a.png", PNG)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert closed_port_url in message and "unreachable" in message and "ATELIER_S3_ENDPOINT_URL" in message
    started = time.monotonic()
    with pytest.raises(OutputStoreError, match="unreachable"):
        store.exists("s3://atelier-down/atelier/jobs/a.png")  # not a silent False
    with pytest.raises(OutputStoreError, match="unreachable"):
        store.read("s3://atelier-down/atelier/jobs/a.png")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"])
def test_refused_credentials_name_the_variables(endpoint: str, code: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="wrong", aws_secret_access_key="wrong")
    store = S3OutputStore("atelier-creds", endpoint_url=endpoint, create_bucket=False, client=client)
    with Stubber(client) as stub:
        stub.add_client_error("put_object", service_error_code=code, http_status_code=403)
        with pytest.raises(OutputStoreError) as info:
            store.put("jobs/a.png", PNG)
    message = str(info.value)
    assert code in message and "ATELIER_S3_ACCESS_KEY" in message and "atelier-creds" in message


def test_a_bucket_that_cannot_be_created_is_not_reported_as_a_missing_output(endpoint: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
    store = S3OutputStore("atelier-404", endpoint_url=endpoint, client=client)
    with Stubber(client) as stub:
        stub.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
        stub.add_client_error("create_bucket", service_error_code="404", http_status_code=404)
        with pytest.raises(OutputStoreError) as info:
            store.put("jobs/a.png", PNG)
    message = str(info.value)
    assert "create bucket" in message and "ATELIER_S3_ENDPOINT_URL" in message
    assert "does not exist" not in message


def test_other_uris_are_refused(store: S3OutputStore) -> None:
    for uri in ("file:///tmp/x.png", "s3://", "s3://bucket-only"):
        with pytest.raises(OutputStoreError) as info:
            store.read(uri)
        assert repr(uri) in str(info.value)


def test_build_output_store_from_settings_talks_to_the_server(
    endpoint: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("ATELIER_S3_ACCESS_KEY", "ATELIER_S3_SECRET_KEY", "ATELIER_S3_PREFIX", "ATELIER_S3_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATELIER_S3_BUCKET", bucket)
    monkeypatch.setenv("ATELIER_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("ATELIER_S3_LINK_SECONDS", "90")
    store: OutputStore = build_output_store(load_settings(data_dir=tmp_path))
    assert isinstance(store, S3OutputStore)
    assert store.describe() == f"s3://{bucket}/atelier/ at {endpoint}"
    stored = store.put(output_key("job-9", 1, ".jpg"), PNG, content_type="image/jpeg")
    assert store.read(stored.uri) == PNG
    link = store.link(stored.uri)
    assert "X-Amz-Expires=90" in link
    assert httpx.get(link, timeout=5, trust_env=False).content == PNG
    assert not (tmp_path / "outputs").exists()


@pytest.mark.asyncio
async def test_a_worker_puts_job_images_in_the_bucket_with_working_links(
    endpoint: str, bucket: str, machine_pg_url: str, tmp_path: Path, fake_comfy: Any
) -> None:
    """End to end: ledger job → worker → ComfyUI (fake) → S3 (moto) → presigned link a browser can open."""
    import asyncio

    from atelier.tools.ledger.models import JobRequest
    from atelier.tools.ledger.service import LedgerService
    from atelier.tools.schemas import GenerationParams
    from atelier.tools.worker.worker import Worker, WorkerOptions

    settings = load_settings(data_dir=tmp_path, comfyui_urls=fake_comfy.url, s3_bucket=bucket,
                             s3_endpoint_url=endpoint, s3_access_key=ACCESS, s3_secret_key=SECRET)
    async with LedgerService.open(settings, conninfo=machine_pg_url) as svc:
        assert isinstance(svc.store, S3OutputStore)
        job = (await svc.submit(JobRequest(params=GenerationParams(prompt="s3 fox", seed=2, steps=2)))).job
        stop = asyncio.Event()
        worker = Worker(svc.ledger, settings, svc.store, WorkerOptions(lease_seconds=3))
        task = asyncio.create_task(worker.run(stop))
        (done,) = await svc.wait([job.id], timeout=30)
        stop.set()
        await task
        assert done.status == "succeeded" and len(done.outputs) == 1
        output = done.outputs[0]
        assert output.uri.startswith(f"s3://{bucket}/atelier/jobs/") and output.uri.endswith(".png")
        link = svc.link(output.uri)
    async with httpx.AsyncClient() as http:
        fetched = await http.get(link)
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")
    assert hashlib.sha256(fetched.content).hexdigest() == output.sha256
