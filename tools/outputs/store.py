"""Where job outputs live: a local folder or an S3-compatible bucket, behind one small interface."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit
from urllib.request import url2pathname

import boto3
import pydantic
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from atelier.tools.errors import AtelierError
from atelier.tools.settings import Settings

__all__ = [
    "LocalOutputStore",
    "OutputStore",
    "OutputStoreError",
    "S3OutputStore",
    "StoredFile",
    "build_output_store",
    "output_key",
]

# S3 error codes that mean "the credentials are wrong or not allowed here".
_CREDENTIAL_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "403",
    }
)
# A write that failed because the disk (or the user's quota on it) is full.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError)
_CREDENTIALS_FIX = (
    "check ATELIER_S3_ACCESS_KEY and ATELIER_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
)


class OutputStoreError(AtelierError):
    """An output could not be written, read or linked; the message names the object, the store (the bucket and
    endpoint, or the folder), why, and the fix. The worker retries a job whose outputs could not be stored
    (tools/worker/runner.py counts OutputStoreError as transient): an unreachable S3 or a full disk loses no job."""


class StoredFile(pydantic.BaseModel):
    """One object the store wrote: where it is, under which key, and what it contains."""

    model_config = pydantic.ConfigDict(frozen=True)

    uri: str
    key: str
    size: int
    sha256: str
    content_type: str


@runtime_checkable
class OutputStore(Protocol):
    """What the ledger needs from an output store: put bytes, read them back, link to them."""

    def put(self, key: str, data: bytes, content_type: str = "image/png") -> StoredFile:
        """Write `data` under `key` (overwriting: the same key always names the same object)."""
        ...

    def read(self, uri: str) -> bytes:
        """Return the bytes stored at `uri`; OutputStoreError naming it if there is none."""
        ...

    def exists(self, uri: str) -> bool:
        """Whether an object is stored at `uri`."""
        ...

    def link(self, uri: str) -> str:
        """Something a person or browser can open: a filesystem path or a presigned URL."""
        ...

    def describe(self) -> str:
        """One line saying where outputs go, for doctor-style output."""
        ...


def _key_parts(key: str) -> tuple[str, ...]:
    """Split a store key into its parts, rejecting anything that could leave the store's root."""
    if not isinstance(key, str) or not key.strip():
        raise OutputStoreError(f"output key {key!r} is empty; give a relative key such as 'jobs/2026/01/01/x.png'")
    if "\\" in key or "\x00" in key:
        raise OutputStoreError(f"output key {key!r} contains a backslash or NUL byte; use '/' between parts")
    path = PurePosixPath(key)
    if path.is_absolute() or (len(key) > 1 and key[1] == ":"):
        raise OutputStoreError(f"output key {key!r} is absolute; keys are relative to the store's root")
    if ".." in path.parts:
        raise OutputStoreError(f"output key {key!r} escapes the store's root with '..'")
    if key.endswith("/") or not path.parts or path.name in ("", "."):
        raise OutputStoreError(f"output key {key!r} names a folder, not a file")
    return path.parts


def _sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


class LocalOutputStore:
    """Outputs as files under one folder; every write is atomic (temp file + rename)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path_for_key(self, key: str) -> Path:
        """The absolute file a key maps to, guaranteed to be inside the root."""
        target = self.root.joinpath(*_key_parts(key))
        if not target.is_relative_to(self.root) or target == self.root:
            raise OutputStoreError(f"output key {key!r} escapes the store's root {self.root}")
        return target

    def _path_for_uri(self, uri: str) -> Path:
        """The absolute file a `file://` URI names."""
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise OutputStoreError(
                f"output {uri!r} is not a local file:// URI; this store keeps outputs in {self.root}"
            )
        path = Path(url2pathname(parts.path))
        if not path.is_absolute():
            raise OutputStoreError(f"output {uri!r} does not name an absolute path")
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            raise OutputStoreError(f"output {uri!r} is outside this store's folder {self.root}; only outputs the "
                                   "store wrote can be read")
        return resolved

    def put(self, key: str, data: bytes, content_type: str = "image/png") -> StoredFile:
        """Write `data` to `root/key` atomically, creating folders; an existing file is replaced."""
        target = self._path_for_key(key)
        key = "/".join(_key_parts(key))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise OutputStoreError(
                f"cannot write output {key!r} under {self.root} ({exc}); check ATELIER_OUTPUT_DIR / ATELIER_DATA_DIR"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp_name, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
            os.replace(temp_name, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            if isinstance(exc, OSError) and exc.errno in _FULL:
                raise OutputStoreError(
                    f"cannot write output {key!r}: the disk holding the output folder {self.root} is full ({exc}); "
                    "free space there or move ATELIER_OUTPUT_DIR (the job is retried)"
                ) from exc
            if isinstance(exc, OSError):
                raise OutputStoreError(f"cannot write output {key!r} to {target} ({exc})") from exc
            raise
        _fsync_folder(target.parent)
        return StoredFile(
            uri=target.as_uri(), key=key, size=len(data), sha256=_sha256(data), content_type=content_type
        )

    def read(self, uri: str) -> bytes:
        """Return the file's bytes; OutputStoreError naming the URI if it is missing or unreadable."""
        path = self._path_for_uri(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise OutputStoreError(f"output {uri} does not exist (no file at {path})") from None
        except OSError as exc:
            raise OutputStoreError(f"cannot read output {uri} ({exc})") from exc

    def exists(self, uri: str) -> bool:
        """Whether a regular file is at the URI's path (never for a path outside the store)."""
        try:
            return self._path_for_uri(uri).is_file()
        except OutputStoreError:
            return False

    def link(self, uri: str) -> str:
        """The absolute filesystem path of the output."""
        return str(self._path_for_uri(uri))

    def describe(self) -> str:
        """`folder <root>`."""
        return f"folder {self.root}"


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entry list so a rename survives a power cut (best effort, POSIX only)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _normal_prefix(prefix: str) -> str:
    """`atelier` → `atelier/`, `/a/b/` → `a/b/`, `` stays ``."""
    text = prefix.strip().strip("/")
    if not text:
        return ""
    if ".." in PurePosixPath(text).parts or "\\" in text:
        raise OutputStoreError(f"S3 prefix {prefix!r} contains '..' or a backslash; check ATELIER_S3_PREFIX")
    return text + "/"


class S3OutputStore:
    """Outputs as objects in an S3-compatible bucket (AWS, MinIO, …) through boto3."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "atelier/",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        link_seconds: int = 3600,
        create_bucket: bool = True,
        client: Any = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise OutputStoreError(f"S3 bucket name {bucket!r} is not valid; check ATELIER_S3_BUCKET")
        if (access_key is None) != (secret_key is None):
            raise OutputStoreError(
                "only one of the S3 access key and secret key is set; set both ATELIER_S3_ACCESS_KEY and "
                "ATELIER_S3_SECRET_KEY, or neither to use the default AWS credential chain"
            )
        if link_seconds < 1:
            raise OutputStoreError(f"S3 link lifetime {link_seconds}s is not positive; check ATELIER_S3_LINK_SECONDS")
        self.bucket = bucket
        self.prefix = _normal_prefix(prefix)
        self.region = region
        self.link_seconds = link_seconds
        self.create_bucket = create_bucket
        self._bucket_ready = not create_bucket
        self._lock = threading.Lock()
        if client is None:
            config = Config(
                connect_timeout=2,
                read_timeout=20,
                retries={"total_max_attempts": 2, "mode": "standard"},
                signature_version="s3v4",
                # Custom endpoints (MinIO and friends) want path-style URLs and may not know the
                # CRC checksums newer botocore sends by default.
                s3={"addressing_style": "path"} if endpoint_url else None,
                request_checksum_calculation="when_required" if endpoint_url else "when_supported",
                response_checksum_validation="when_required" if endpoint_url else "when_supported",
            )
            session = boto3.session.Session(
                aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
            )
            try:
                client = session.client("s3", endpoint_url=endpoint_url, config=config)
            except (BotoCoreError, ValueError) as exc:
                raise OutputStoreError(
                    f"cannot set up the S3 client for {endpoint_url or 'AWS'} ({exc}); "
                    "check ATELIER_S3_ENDPOINT_URL and ATELIER_S3_REGION"
                ) from exc
        self._client: Any = client
        self.endpoint: str = str(endpoint_url or client.meta.endpoint_url)

    def _uri(self, full_key: str) -> str:
        """`s3://bucket/full_key`."""
        return f"s3://{self.bucket}/{full_key}"

    def _split(self, uri: str) -> tuple[str, str]:
        """`s3://bucket/key` → (bucket, key)."""
        if not uri.startswith("s3://"):
            raise OutputStoreError(f"output {uri!r} is not an s3:// URI; this store keeps outputs in {self.describe()}")
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise OutputStoreError(f"output {uri!r} does not name both a bucket and a key (s3://bucket/key)")
        return bucket, key

    def _error(self, exc: Exception, action: str, uri: str, bucket: str | None = None) -> OutputStoreError:
        """Turn a boto3 failure into an OutputStoreError that names the endpoint/bucket and the fix."""
        bucket = bucket or self.bucket
        where = f"S3 at {self.endpoint}"
        if isinstance(exc, _UNREACHABLE):
            return OutputStoreError(
                f"{where} is unreachable while trying to {action} {uri} ({exc}); check ATELIER_S3_ENDPOINT_URL "
                "and that the S3 server is running"
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return OutputStoreError(f"no S3 credentials to {action} {uri} at {self.endpoint}; {_CREDENTIALS_FIX}")
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            message = str(error.get("Message", "") or exc)
            if code == "NoSuchBucket":
                return OutputStoreError(
                    f"bucket {bucket!r} does not exist at {self.endpoint} (while trying to {action} {uri}); "
                    "create it or check ATELIER_S3_BUCKET"
                )
            if code in _CREDENTIAL_CODES:
                return OutputStoreError(
                    f"{where} refused access to bucket {bucket!r} while trying to {action} {uri} ({code}: {message}); "
                    f"{_CREDENTIALS_FIX}, and that they may use bucket {bucket!r} (ATELIER_S3_BUCKET)"
                )
            if code in _MISSING_KEY_CODES and action in ("read", "look up"):
                return OutputStoreError(f"output {uri} does not exist (bucket {bucket!r} at {self.endpoint})")
            return OutputStoreError(
                f"{where} failed to {action} {uri} ({code}: {message}); check ATELIER_S3_ENDPOINT_URL, "
                "ATELIER_S3_REGION and ATELIER_S3_BUCKET"
            )
        return OutputStoreError(
            f"{where} failed to {action} {uri} ({type(exc).__name__}: {exc}); check ATELIER_S3_ENDPOINT_URL "
            "and ATELIER_S3_REGION"
        )

    def _ensure_bucket(self) -> None:
        """Create the bucket once per store if it is missing (only when `create_bucket`)."""
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return
            uri = f"s3://{self.bucket}"
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in ("404", "NoSuchBucket", "NotFound"):
                    raise self._error(exc, "check bucket", uri) from exc
                self._create_bucket(uri)
            except (BotoCoreError, ValueError) as exc:
                raise self._error(exc, "check bucket", uri) from exc
            self._bucket_ready = True

    def _create_bucket(self, uri: str) -> None:
        """Create the bucket in the store's region; someone else creating it first is fine."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._error(exc, "create bucket", uri) from exc
        except (BotoCoreError, ValueError) as exc:
            raise self._error(exc, "create bucket", uri) from exc

    def put(self, key: str, data: bytes, content_type: str = "image/png") -> StoredFile:
        """Upload `data` to `prefix + key` with its content type; the same key overwrites the same object."""
        key = "/".join(_key_parts(key))
        full_key = self.prefix + key
        uri = self._uri(full_key)
        digest = _sha256(data)
        self._ensure_bucket()
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=full_key, Body=data, ContentType=content_type, Metadata={"sha256": digest}
            )
        except (BotoCoreError, ClientError, ValueError) as exc:
            raise self._error(exc, "write", uri) from exc
        return StoredFile(uri=uri, key=key, size=len(data), sha256=digest, content_type=content_type)

    def read(self, uri: str) -> bytes:
        """Download the object's bytes; OutputStoreError naming the URI if it is missing."""
        bucket, key = self._split(uri)
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
            data: bytes = response["Body"].read()
        except (BotoCoreError, ClientError, ValueError) as exc:
            raise self._error(exc, "read", uri, bucket) from exc
        return data

    def exists(self, uri: str) -> bool:
        """Whether the object exists (a HEAD request); unreachable S3 raises rather than answering False."""
        bucket, key = self._split(uri)
        try:
            self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_KEY_CODES or code == "NoSuchBucket":
                return False
            raise self._error(exc, "look up", uri, bucket) from exc
        except (BotoCoreError, ValueError) as exc:
            raise self._error(exc, "look up", uri, bucket) from exc
        return True

    def link(self, uri: str) -> str:
        """A presigned GET URL for the object, valid for `link_seconds` (made locally, no request)."""
        bucket, key = self._split(uri)
        try:
            url: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.link_seconds
            )
        except (BotoCoreError, ClientError, ValueError) as exc:
            raise self._error(exc, "link", uri, bucket) from exc
        return url

    def describe(self) -> str:
        """`s3://bucket/prefix at <endpoint>`."""
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"


def build_output_store(settings: Settings) -> OutputStore:
    """The S3 store when ATELIER_S3_BUCKET is set, otherwise the local outputs folder."""
    if settings.s3_bucket:
        access = settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        return S3OutputStore(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=access,
            secret_key=secret,
            link_seconds=settings.s3_link_seconds,
        )
    return LocalOutputStore(settings.outputs)


def output_key(job_id: str, index: int, suffix: str = ".png", *, when: datetime | None = None) -> str:
    """The deterministic key of a job's `index`-th output: `jobs/YYYY/MM/DD/<job>_NN<suffix>` (UTC date)."""
    job = str(job_id).strip()
    if not job or "/" in job or "\\" in job or job in (".", ".."):
        raise OutputStoreError(f"job id {job_id!r} cannot be part of an output key")
    if index < 0:
        raise OutputStoreError(f"output index {index} is negative")
    if suffix and not suffix.startswith("."):
        suffix = "." + suffix
    if "/" in suffix or "\\" in suffix:
        raise OutputStoreError(f"output suffix {suffix!r} contains a path separator")
    moment = when or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"jobs/{moment:%Y/%m/%d}/{job}_{index:02d}{suffix}"
