"""ModelStore on moto S3: artefacts and metadata per SKU, versions, forecasts, errors."""

from __future__ import annotations

import gzip
import json

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from siprems.errors import (
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    PermanentError,
    StorageUnavailableError,
    TransientError,
)
from siprems.model_store import ModelStore

BUCKET = "siprems-models-test"


@pytest.fixture
def s3(aws):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture
def store(s3):
    return ModelStore(s3, BUCKET)


def test_saves_the_model_gzipped_and_metadata_naming_its_version(store, s3):
    stored = store.save_model("BRD-001", '{"model": 1}', {"trained_at": "t1", "samples": 5})
    assert stored["model_key"] == "models/BRD-001/model.json"
    assert stored["model_version_id"]
    raw = s3.get_object(Bucket=BUCKET, Key="models/BRD-001/model.json")
    assert raw["ContentEncoding"] == "gzip"
    assert gzip.decompress(raw["Body"].read()) == b'{"model": 1}'
    metadata = json.loads(
        s3.get_object(Bucket=BUCKET, Key="models/BRD-001/metadata.json")["Body"].read()
    )
    assert metadata["model_version_id"] == stored["model_version_id"]
    assert metadata["samples"] == 5

    loaded = store.load_model("BRD-001")
    assert loaded.model_json == '{"model": 1}'
    assert loaded.version == stored["model_version_id"]


def test_a_retrain_keeps_the_previous_model_as_an_older_version(store, s3):
    first = store.save_model("BRD-001", '{"model": 1}', {"trained_at": "t1"})
    second = store.save_model("BRD-001", '{"model": 2}', {"trained_at": "t2"})
    assert first["model_version_id"] != second["model_version_id"]
    assert store.load_model("BRD-001").model_json == '{"model": 2}'
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="models/BRD-001/model.json")
    assert len(versions["Versions"]) == 2
    old = s3.get_object(
        Bucket=BUCKET, Key="models/BRD-001/model.json", VersionId=first["model_version_id"]
    )
    assert gzip.decompress(old["Body"].read()) == b'{"model": 1}'


def test_metadata_pins_the_model_version_it_describes(store, s3):
    """A model.json written after the metadata (a retrain in flight) is not served."""
    store.save_model("BRD-001", '{"model": 1}', {"trained_at": "t1"})
    s3.put_object(
        Bucket=BUCKET,
        Key="models/BRD-001/model.json",
        Body=gzip.compress(b'{"model": "in flight"}'),
        ContentEncoding="gzip",
    )
    assert store.load_model("BRD-001").model_json == '{"model": 1}'


def test_without_versioning_a_mismatched_pair_is_transient(aws):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="plain-bucket")
    store = ModelStore(client, "plain-bucket")
    store.save_model("BRD-001", '{"model": 1}', {})
    assert store.load_model("BRD-001").model_json == '{"model": 1}'
    client.put_object(Bucket="plain-bucket", Key="models/BRD-001/model.json", Body=b"{}")
    with pytest.raises(StorageUnavailableError, match="does not match"):
        store.load_model("BRD-001")


def test_the_serving_document_is_stored_beside_the_model_and_pinned_too(store, s3):
    serving = {"format": 1, "kernel": {"beta": [0.5]}, "holiday_names": {}}
    stored = store.save_model("BRD-001", '{"model": 1}', {"trained_at": "t1"}, serving=serving)
    assert stored["serving_key"] == "models/BRD-001/serving.json"
    assert stored["serving_version_id"] and len(stored["serving_sha256"]) == 64
    raw = s3.get_object(Bucket=BUCKET, Key="models/BRD-001/serving.json")
    assert raw["ContentEncoding"] == "gzip"
    metadata = store.load_metadata("BRD-001")
    assert store.load_serving("BRD-001", metadata) == serving
    # a serving.json written after the metadata (a retrain in flight) is not served
    s3.put_object(Bucket=BUCKET, Key="models/BRD-001/serving.json", Body=b'{"format": 2}')
    assert store.load_serving("BRD-001", metadata) == serving
    # a model stored without one (an older release) has none
    store.save_model("CKE-001", '{"model": 2}', {})
    assert store.load_serving("CKE-001", store.load_metadata("CKE-001")) is None


def test_without_versioning_a_mismatched_serving_document_is_transient(aws):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="plain-bucket")
    store = ModelStore(client, "plain-bucket")
    store.save_model("BRD-001", "{}", {}, serving={"format": 1})
    metadata = store.load_metadata("BRD-001")
    assert store.load_serving("BRD-001", metadata) == {"format": 1}
    client.put_object(Bucket="plain-bucket", Key="models/BRD-001/serving.json", Body=b"{}")
    with pytest.raises(StorageUnavailableError, match="does not match"):
        store.load_serving("BRD-001", metadata)
    client.delete_object(Bucket="plain-bucket", Key="models/BRD-001/serving.json")
    with pytest.raises(ModelNotFoundError, match="serving document"):
        store.load_serving("BRD-001", metadata)


def test_unknown_model_is_model_not_found(store):
    with pytest.raises(ModelNotFoundError) as caught:
        store.load_model("CKE-001")
    assert caught.value.http_status == 404 and isinstance(caught.value, PermanentError)
    with pytest.raises(ModelNotFoundError):
        store.load_metadata("CKE-001")


def test_forecast_results_round_trip(store):
    result = {"product_sku": "BRD-001", "chartData": [{"date": "2018-08-01", "predicted": 41.5}]}
    key = store.save_forecast("4f1c-task", result)
    assert key == "forecasts/4f1c-task.json"
    assert store.load_forecast("4f1c-task") == result
    with pytest.raises(NotFoundError) as caught:
        store.load_forecast("no-such-task")
    # a client reads this message (GET /api/tasks/{id} of a job whose result is gone)
    assert store.bucket not in caught.value.public_message
    assert "no-such-task" in caught.value.public_message


def test_a_missing_bucket_is_a_transient_storage_error(aws):
    store = ModelStore(boto3.client("s3", region_name="us-east-1"), "no-such-bucket")
    with pytest.raises(StorageUnavailableError) as caught:
        store.save_model("BRD-001", "{}", {})
    assert isinstance(caught.value, TransientError) and "NoSuchBucket" in caught.value.message


def test_an_unreachable_endpoint_is_a_transient_storage_error():
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        config=boto3.session.Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(StorageUnavailableError) as caught:
        ModelStore(client, BUCKET).load_model("BRD-001")
    assert isinstance(caught.value.__cause__, EndpointConnectionError)


def test_keys_are_validated_before_any_call(store):
    for bad in ("", "../etc", "a/b", "x" * 100, "BRD-001\n"):
        with pytest.raises(InvalidInputError):
            store.model_key(bad)
    with pytest.raises(InvalidInputError):
        store.save_forecast("../x", {})


def test_non_json_values_are_refused(store):
    with pytest.raises(ValueError):
        store.save_forecast("t1", {"mase": float("nan")})


def test_listing_the_models_reads_every_page(store, s3):
    """S3 lists 1,000 keys a page, and every model has three (about 333 products a page):
    the status page must not stop at the first."""
    for i in range(1_001):
        sku = f"P-{i:04d}"
        s3.put_object(
            Bucket=store.bucket, Key=store.metadata_key(sku), Body=b'{"sku": "%s"}' % sku.encode()
        )
    listed = store.list_metadata(limit=2_000)
    assert len(listed) == 1_001 and listed[-1]["sku"] == "P-1000"


def test_the_models_metadata_is_read_several_at_a_time(store, s3, monkeypatch):
    """One read after the other, 500 models took most of API Gateway's 29 s on the status
    page; a model removed between the listing and its read is left out."""
    import threading
    import time

    for i in range(40):
        sku = f"P-{i:02d}"
        s3.put_object(
            Bucket=store.bucket, Key=store.metadata_key(sku), Body=b'{"sku": "%s"}' % sku.encode()
        )
    real, lock, running, most = store._get_json, threading.Lock(), [0], [0]

    def slow_read(key):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        if key == store.metadata_key("P-07"):
            s3.delete_object(Bucket=store.bucket, Key=key)  # removed after the listing
        return real(key)

    monkeypatch.setattr(store, "_get_json", slow_read)
    listed = store.list_metadata()
    assert [m["sku"] for m in listed] == [f"P-{i:02d}" for i in range(40) if i != 7]
    assert most[0] > 1
