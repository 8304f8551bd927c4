"""An S3 destination: objects under a prefix in one bucket (AWS or an S3-compatible service),
written as multipart uploads completed on commit. The only module that imports boto3."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC
from typing import Any, BinaryIO, cast

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from reconciler.destinations import (
    S3_PAGE_SIZE,
    S3_PART_SIZE,
    BackupWriter,
    DestinationError,
    StoredBackup,
    check_name,
    directory_parts,
)
from reconciler.models import S3Destination, SecretRef

# S3 allows at most 10,000 parts: the part size doubles every 1,000 parts, so a backup can grow to
# terabytes while small ones still upload in 8 MiB steps.
_PARTS_PER_SIZE_STEP = 1000


class _S3Writer:
    """A multipart upload, started lazily: a backup smaller than one part is a single PUT."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._open = True
        self._committed = False

    def _where(self) -> str:
        return f"s3://{self._bucket}/{self._key}"

    def write(self, chunk: bytes) -> None:
        if not self._open:
            raise DestinationError(f"{self._where()}: write after commit or abort")
        self._buffer += chunk
        if len(self._buffer) >= self._current_part_size():
            self._upload_part()

    def _current_part_size(self) -> int:
        return int(self._part_size << (len(self._parts) // _PARTS_PER_SIZE_STEP))

    def _upload_part(self) -> None:
        body, self._buffer = self._buffer, bytearray()
        number = len(self._parts) + 1
        with _s3_errors(f"uploading part {number} of {self._where()}"):
            if self._upload_id is None:
                created = self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._key, ChecksumAlgorithm="CRC32"
                )
                self._upload_id = created["UploadId"]
            response = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(body),
                ChecksumAlgorithm="CRC32",
            )
        # The upload was created with a checksum algorithm, so completing it needs each part's.
        self._parts.append(
            {
                "PartNumber": number,
                "ETag": response["ETag"],
                "ChecksumCRC32": response["ChecksumCRC32"],
            }
        )

    def commit(self) -> None:
        if not self._open:
            raise DestinationError(f"{self._where()}: commit after commit or abort")
        self._open = False
        try:
            if self._upload_id is None:
                with _s3_errors(f"storing {self._where()}"):
                    self._client.put_object(
                        Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer)
                    )
            else:
                if self._buffer:
                    self._upload_part()
                with _s3_errors(f"completing {self._where()}"):
                    self._client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=self._key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
        except DestinationError:
            self._abort_upload()
            raise
        self._committed = True

    def abort(self) -> None:
        self._open = False
        self._buffer = bytearray()
        if not self._committed:
            self._abort_upload()

    def _abort_upload(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            with suppress(ClientError, BotoCoreError):  # remove_partial catches what this misses
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=upload_id
                )


@contextmanager
def _s3_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DestinationError(
            f"{doing}: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
        ) from exc
    except BotoCoreError as exc:
        raise DestinationError(f"{doing}: {exc}") from exc


class S3Store:
    """Objects under `prefix` in one bucket; a directory is a further key prefix."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        part_size: int = S3_PART_SIZE,
        page_size: int = S3_PAGE_SIZE,
    ) -> None:
        self._client, self._bucket = client, bucket
        # "/backups" and "backups" mean the same to people; S3 would make them different keys.
        self._prefix = directory_parts(prefix.lstrip("/"), "s3 prefix")
        self._part_size, self._page_size = part_size, page_size

    def _key_prefix(self, directory: str) -> str:
        parts = [*self._prefix, *directory_parts(directory)]
        return "".join(f"{part}/" for part in parts)

    def _key(self, directory: str, name: str) -> str:
        return self._key_prefix(directory) + check_name(name)

    def open_writer(self, directory: str, name: str) -> BackupWriter:
        return _S3Writer(self._client, self._bucket, self._key(directory, name), self._part_size)

    def _pages(self, operation: str, directory: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, entry) for every entry of every page directly under `directory`."""
        prefix = self._key_prefix(directory)
        pages = self._client.get_paginator(operation).paginate(
            Bucket=self._bucket,
            Prefix=prefix,
            Delimiter="/",
            PaginationConfig={"PageSize": self._page_size},
        )
        field = "Contents" if operation == "list_objects_v2" else "Uploads"
        with _s3_errors(f"listing s3://{self._bucket}/{prefix}"):
            for page in pages:
                for entry in page.get(field, []):
                    name = entry["Key"][len(prefix) :]
                    if name and "/" not in name and not name.startswith("."):
                        yield name, entry

    def list_backups(self, directory: str) -> list[StoredBackup]:
        found = [
            StoredBackup(name, int(entry["Size"]), entry["LastModified"].astimezone(UTC))
            for name, entry in self._pages("list_objects_v2", directory)
        ]
        return sorted(found, key=lambda backup: backup.name)

    def delete(self, directory: str, name: str) -> None:
        key = self._key(directory, name)
        with _s3_errors(f"deleting s3://{self._bucket}/{key}"):
            self._client.delete_object(Bucket=self._bucket, Key=key)

    @contextmanager
    def open_reader(self, directory: str, name: str) -> Iterator[BinaryIO]:
        key = self._key(directory, name)
        with _s3_errors(f"reading s3://{self._bucket}/{key}"):
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"]
        try:
            yield cast(BinaryIO, body)
        finally:
            body.close()

    def remove_partial(self, directory: str, name: str) -> bool:
        removed = False
        for found, upload in list(self._pages("list_multipart_uploads", directory)):
            if found != check_name(name):
                continue
            with _s3_errors(f"aborting the upload of s3://{self._bucket}/{upload['Key']}"):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            removed = True
        return removed

    def close(self) -> None:
        self._client.close()


def open_s3_store(
    destination: S3Destination,
    resolve_secret: Callable[[SecretRef], str],
    part_size: int,
    page_size: int,
) -> S3Store:
    if (destination.access_key_id is None) != (destination.secret_access_key is None):
        raise DestinationError(
            f"s3 destination {destination.id} ({destination.label}): give both access_key_id "
            "and secret_access_key, or neither to use the daemon's default AWS credentials"
        )
    credentials = {}
    if destination.access_key_id is not None and destination.secret_access_key is not None:
        credentials = {
            "aws_access_key_id": resolve_secret(destination.access_key_id),
            "aws_secret_access_key": resolve_secret(destination.secret_access_key),
        }
    # A session of its own: boto3's default session is shared module state and not thread-safe.
    session = boto3.session.Session(region_name=destination.region, **credentials)
    config = BotoConfig(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=120,
        # S3-compatible servers behind a custom endpoint rarely have wildcard DNS for buckets.
        s3={"addressing_style": "path" if destination.endpoint_url else "auto"},
    )
    client = session.client("s3", endpoint_url=destination.endpoint_url, config=config)
    return S3Store(
        client, destination.bucket, destination.prefix, part_size=part_size, page_size=page_size
    )
