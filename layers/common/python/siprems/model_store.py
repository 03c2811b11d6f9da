"""Model artefacts, their metadata and large job results in S3.

Layout (one prefix per SKU)::

    models/{sku}/model.json      Prophet ``model_to_json``, gzip-compressed
    models/{sku}/serving.json    what a forecast reads instead: the model's numpy kernel and
                                 the chart's holiday names (a few kB, gzip-compressed)
    models/{sku}/metadata.json   metrics, training window, versions, config hash, and the
                                 S3 version id + sha256 of the model.json and serving.json
                                 it describes
    forecasts/{task_id}.json     a job's result too large for its job item (the worker's
                                 ``INLINE_RESULT_MAX_BYTES``; smaller ones live in the item)

Why S3 versioning and not one key per training: the bucket is versioned, so a retrain
writes a *new version* of ``model.json`` and never destroys the one being served, and a
lifecycle rule on noncurrent versions expires old models without any bookkeeping here.
``metadata.json`` is written last and names the exact ``model.json`` (and ``serving.json``)
version, so it is the commit point: a reader always loads a matching set, even while a
retrain (or two concurrent ones, at-least-once delivery) is writing. On a bucket without
versioning the set is checked by sha256 instead and a mismatch is reported as transient
(retry).

This module deals in JSON text and dicts only: it does not import Prophet or pandas.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from siprems.errors import (
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    StorageUnavailableError,
)
from siprems.identifiers import SKU_PATTERN, TASK_ID_PATTERN

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}


@dataclass(frozen=True)
class StoredModel:
    model_json: str
    metadata: dict[str, Any]

    @property
    def version(self) -> str | None:
        return self.metadata.get("model_version_id")


# Metadata documents the status page reads at once (of the S3 client's 32 connections).
METADATA_READERS = 16


class ModelStore:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    # --- keys ----------------------------------------------------------------------------
    @staticmethod
    def sku_key(sku: str, name: str) -> str:
        return f"models/{_checked(sku, SKU_PATTERN, 'SKU')}/{name}"

    @classmethod
    def model_key(cls, sku: str) -> str:
        return cls.sku_key(sku, "model.json")

    @classmethod
    def serving_key(cls, sku: str) -> str:
        return cls.sku_key(sku, "serving.json")

    @classmethod
    def metadata_key(cls, sku: str) -> str:
        return cls.sku_key(sku, "metadata.json")

    @staticmethod
    def forecast_key(task_id: str) -> str:
        return f"forecasts/{_checked(task_id, TASK_ID_PATTERN, 'task id')}.json"

    # --- models --------------------------------------------------------------------------
    def save_model(
        self,
        sku: str,
        model_json: str,
        metadata: dict[str, Any],
        serving: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store the artefact (and the serving document), then the metadata (the commit
        point). Returns the metadata as stored, with ``model_key``, ``model_version_id`` and
        ``model_sha256`` (and ``serving_key``, ``serving_version_id``, ``serving_sha256``)."""
        stored = {**metadata, "sku": sku}
        for name, key, body in (
            ("model", self.model_key(sku), model_json.encode()),
            (
                "serving",
                self.serving_key(sku),
                None if serving is None else _json_bytes(serving),
            ),
        ):
            if body is None:
                continue
            digest = hashlib.sha256(body).hexdigest()
            put = self._call(
                "put_object",
                Bucket=self.bucket,
                Key=key,
                # Level 1: a third of level 6's CPU for a model (~1 ms against ~3 ms for
                # 300 KB of JSON), 17 % larger; every first training and nightly retrain pays it.
                Body=gzip.compress(body, compresslevel=1),
                ContentType="application/json",
                ContentEncoding="gzip",
                Metadata={"sha256": digest},
            )
            stored.update(
                {
                    f"{name}_key": key,
                    f"{name}_version_id": put.get("VersionId"),
                    f"{name}_sha256": digest,
                }
            )
        self._put_json(self.metadata_key(sku), stored)
        return stored

    def load_metadata(self, sku: str) -> dict[str, Any]:
        try:
            return self._get_json(self.metadata_key(sku))
        except NotFoundError as exc:
            raise ModelNotFoundError(f"no trained model for {sku!r}", product_sku=sku) from exc

    def load_model(self, sku: str, metadata: dict[str, Any] | None = None) -> StoredModel:
        """The Prophet model JSON that ``metadata`` (read now if not given) names."""
        metadata = self.load_metadata(sku) if metadata is None else metadata
        raw = self._load_versioned(sku, "model", self.model_key(sku), metadata)
        if raw is None:
            raise ModelNotFoundError(f"the model artefact of {sku!r} is missing", product_sku=sku)
        return StoredModel(model_json=raw.decode(), metadata=metadata)

    def load_serving(self, sku: str, metadata: dict[str, Any]) -> dict[str, Any] | None:
        """The serving document ``metadata`` names; None for a model stored without one."""
        if not metadata.get("serving_key"):
            return None
        raw = self._load_versioned(sku, "serving", self.serving_key(sku), metadata)
        if raw is None:
            raise ModelNotFoundError(f"the serving document of {sku!r} is missing", product_sku=sku)
        return json.loads(raw)

    def _load_versioned(
        self, sku: str, name: str, key: str, metadata: dict[str, Any]
    ) -> bytes | None:
        """The object version the metadata names, checked against its sha256."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        version = metadata.get(f"{name}_version_id")
        if version and version != "null":
            args["VersionId"] = version
        try:
            response = self._call("get_object", **args)
        except NotFoundError:
            return None
        raw = response["Body"].read()
        if response.get("ContentEncoding") == "gzip" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        digest = metadata.get(f"{name}_sha256")
        if digest and hashlib.sha256(raw).hexdigest() != digest:
            # Only possible without bucket versioning, while a retrain is writing.
            raise StorageUnavailableError(
                f"the {name} artefact of {sku!r} does not match its metadata (being replaced)",
                product_sku=sku,
            )
        return raw

    def list_metadata(self, limit: int = 500) -> list[dict[str, Any]]:
        """The metadata of every stored model (up to ``limit``), by SKU. Read
        ``METADATA_READERS`` at a time: one after the other, 500 reads took most of API
        Gateway's 29 s."""
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": "models/"}
        while len(keys) < limit:
            response = self._call("list_objects_v2", **kwargs)
            keys += [
                entry["Key"]
                for entry in response.get("Contents", [])
                if entry["Key"].endswith("/metadata.json")
            ]
            if not response.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = response["NextContinuationToken"]

        def read(key: str) -> dict[str, Any] | None:
            try:
                return self._get_json(key)
            except NotFoundError:  # removed since the listing
                return None

        with ThreadPoolExecutor(max_workers=METADATA_READERS) as pool:
            found = [m for m in pool.map(read, keys[:limit]) if m is not None]
        return sorted(found, key=lambda m: str(m.get("sku", "")))

    # --- forecast results ----------------------------------------------------------------
    def save_forecast(self, task_id: str, result: dict[str, Any]) -> str:
        key = self.forecast_key(task_id)
        self._put_json(key, result)
        return key

    def load_forecast(self, task_id: str) -> dict[str, Any]:
        try:
            return self._get_json(self.forecast_key(task_id))
        except NotFoundError as exc:  # its message names the bucket: clients read this one
            raise NotFoundError(
                f"the result of task {task_id} is no longer stored", task_id=task_id
            ) from exc

    # --- S3 access -----------------------------------------------------------------------
    def _put_json(self, key: str, value: dict[str, Any]) -> None:
        self._call(
            "put_object",
            Bucket=self.bucket,
            Key=key,
            Body=_json_bytes(value),
            ContentType="application/json",
        )

    def _get_json(self, key: str) -> dict[str, Any]:
        response = self._call("get_object", Bucket=self.bucket, Key=key)
        return json.loads(response["Body"].read())

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One S3 call: a missing object → NotFoundError, anything else → transient."""
        try:
            return getattr(self._s3, operation)(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise NotFoundError(f"s3://{self.bucket}/{kwargs.get('Key')} not found") from exc
            raise StorageUnavailableError(
                f"S3 {operation} failed on s3://{self.bucket}/{kwargs.get('Key')}: {code}",
                s3_error=code,
            ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailableError(
                f"S3 {operation} failed on s3://{self.bucket}/{kwargs.get('Key')}: {exc}"
            ) from exc


def _json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _checked(value: str, pattern: str, what: str) -> str:
    # fullmatch: with re.match, "$" would let a trailing newline through (the API's pydantic
    # check refuses it; a SKU read from the database is only checked here)
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise InvalidInputError(f"invalid {what}: {value!r}")
    return value
