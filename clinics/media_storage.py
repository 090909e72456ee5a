"""A clinic's uploaded files (X-rays) on S3 or an S3-compatible store (``STORAGES["default"]``).

``TenantS3MediaStorage`` keeps each clinic's files under ``<location>/<schema>/<generation>/``,
where ``generation`` is ``Clinic.media_generation``: empty for a clinic whose files were
never restored (no segment then: ``<location>/<schema>/<name>``), else a token such as
``~3f9a0c1b2d4e``. A restore writes the archive's files under a NEW generation while the
data restores, and the clinic moves to it by one column of its row, written in the same
transaction as the data (see ``backups.media.S3MediaStaging``). Generation tokens start
with ``~``, which Django never puts in a file name it generates (``get_valid_filename``),
so the objects of the empty generation and the other generations' folders cannot be
confused; a name whose first part starts with ``~`` is refused in the empty generation.

The generation is read for every operation from ``connection.tenant`` when that is a
``Clinic`` (a request's tenant, loaded when the request began), otherwise from the clinic's
row (workers, ``schema_context``): never cached, so it cannot go stale across a restore.

``url()`` answers the site's own ``MEDIA_URL/<schema>/<name>`` (the clinic's permission-checked
media view), like the local storage, never a presigned link to the bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import connection
from django.utils.encoding import filepath_to_uri
from storages.backends.s3 import S3Storage, _filter_download_params
from storages.utils import clean_name, safe_join

from clinics.media_generations import GENERATION_MARK, current_generation

_DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys


class TenantS3MediaStorage(S3Storage):
    """Per-clinic media on S3: ``<location>/<schema>/<generation>/<name>``; private objects, streamed.

    Defaults that differ from django-storages': no overwriting (a second ``a.png`` gets a
    suffix, as on the local disk), no ACL, s3v4 signatures, ``ServerSideEncryption=AES256``,
    uploads in 8 MiB parts with two in flight.
    """

    def get_default_settings(self) -> dict[str, Any]:
        defaults = super().get_default_settings()
        defaults.update(
            {
                "file_overwrite": False,
                "default_acl": None,
                "signature_version": "s3v4",
                "object_parameters": {"ServerSideEncryption": "AES256"},
                "gzip": False,
            }
        )
        if defaults["transfer_config"] is None:  # not set by AWS_S3_TRANSFER_CONFIG
            bounded = TransferConfig(max_concurrency=2, preferred_transfer_client="classic")
            bounded.max_in_memory_upload_chunks = 2  # an attribute s3transfer reads, not an argument
            defaults["transfer_config"] = bounded
        return defaults

    # --- where a clinic's files are --------------------------------------------------------

    def generation_now(self, schema: str) -> str:
        """The generation of ``schema``: from ``connection.tenant`` if it is that clinic, else its row."""
        tenant = getattr(connection, "tenant", None)
        if getattr(tenant, "schema_name", None) == schema and hasattr(tenant, "media_generation"):
            return tenant.media_generation or ""
        return current_generation(schema)

    def clinic_root(self, schema: str, generation: str) -> str:
        """The key prefix of one generation of a clinic's files, ending with ``/``."""
        if generation and not (generation.startswith(GENERATION_MARK) and "/" not in generation):
            raise SuspiciousOperation(f"invalid media generation {generation[:40]!r}")
        if not schema or "/" in schema:
            raise SuspiciousOperation(f"invalid schema name {schema[:80]!r}")
        # Always ending with "/": a prefix "media/clinic" would also list "media/clinic2/...".
        return safe_join(self.location, schema, generation).rstrip("/") + "/"

    def clinic_key(self, name: str, *, schema: str, generation: str) -> str:
        """The object key of file ``name`` in one generation of a clinic's files."""
        name = clean_name(name)
        if not generation and name.split("/", 1)[0].startswith(GENERATION_MARK):
            raise SuspiciousOperation(f"Attempted access to '{name}' denied.")
        root = self.clinic_root(schema, generation)
        try:
            return safe_join(root, name)
        except ValueError:
            raise SuspiciousOperation(f"Attempted access to '{name}' denied.") from None

    def _normalize_name(self, name: str) -> str:
        schema = connection.schema_name
        return self.clinic_key(name, schema=schema, generation=self.generation_now(schema))

    def url(self, name: str, parameters: Any = None, expire: Any = None, http_method: Any = None) -> str:
        """The site's own URL of the file (its media view checks the visitor's permission)."""
        base = settings.MEDIA_URL.rstrip("/")
        return f"{base}/{connection.schema_name}/{filepath_to_uri(clean_name(name).lstrip('/'))}"

    def listdir(self, name: str) -> tuple[list[str], list[str]]:
        """Like S3Storage's, without other generations' folders at the top of the empty generation."""
        directories, files = super().listdir(name)
        if not clean_name(name).strip("/"):
            directories = [d for d in directories if not d.startswith(GENERATION_MARK)]
        return directories, files

    # --- objects by key (used by backups and restores) -------------------------------------

    def open_key(self, key: str) -> Any:
        """A streaming body of the object ``key`` (nothing buffered whole); FileNotFoundError if absent."""
        params = _filter_download_params(self.get_object_parameters(key))
        try:
            return self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=key, **params)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from exc
            raise

    def put_key(self, key: str, stream: Any) -> None:
        """Upload a readable (not necessarily seekable) ``stream`` as object ``key``."""
        params = self._get_write_parameters(key)
        self.bucket.Object(key).upload_fileobj(_Readable(stream), ExtraArgs=params, Config=self.transfer_config)

    def generations(self, schema: str) -> dict[str, list[str]]:
        """Every object key under the clinic's folder, grouped by generation ("" for the empty one)."""
        root = self.clinic_root(schema, "")
        found: dict[str, list[str]] = {}
        for key in self._keys(root):
            first = key[len(root) :].split("/", 1)[0]
            generation = first if first.startswith(GENERATION_MARK) and "/" in key[len(root) :] else ""
            found.setdefault(generation, []).append(key)
        return found

    def delete_keys(self, keys: list[str]) -> None:
        """Delete objects, a thousand per request; raises if the store refuses any."""
        client = self.connection.meta.client
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + _DELETE_BATCH]]
            response = client.delete_objects(Bucket=self.bucket_name, Delete={"Objects": batch, "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(f"could not delete {len(errors)} object(s), e.g. {first.get('Key')}: {first.get('Code')}")

    def _keys(self, prefix: str) -> Iterator[str]:
        paginator = self.connection.meta.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=prefix):
            for entry in page.get("Contents", ()):
                yield entry["Key"]


class _Readable:
    """A read-only, non-seekable view of a stream (s3transfer may close what it is given)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, *args: Any) -> bytes:
        return self._stream.read(*args)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        pass
