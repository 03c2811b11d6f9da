"""The whole path a client takes, each step driven by the sample events of events/:
submit -> SQS -> worker (real Prophet fit on the Kiel data) -> status."""

from __future__ import annotations

import threading

from tests.fixtures.app import api_event, invoke, response_json


def reset_settings(monkeypatch, **env):
    from siprems.config import load_settings
    from siprems.jobs.services import get_services

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    load_settings.cache_clear()
    get_services.cache_clear()


def test_async_forecast_flow_ends_in_success_with_the_forecast(app):
    submitted = invoke("submit", api_event("submit/predict-async.json"))
    assert submitted["statusCode"] == 202
    body = response_json(submitted)
    assert body["status"] == "submitted"
    assert body["product_sku"] == "BRD-001"
    assert body["forecast_days"] == 7
    task_id = body["task_id"]

    pending = invoke("status", api_event("status/task.json", path_parameters={"task_id": task_id}))
    assert pending["statusCode"] == 202
    assert response_json(pending)["status"] == "PENDING"

    worker = app.run_worker()
    assert worker == {"batchItemFailures": []}

    done = invoke(
        "status", api_event("status/predict-task.json", path_parameters={"task_id": task_id})
    )
    assert done["statusCode"] == 200
    result = response_json(done)
    assert result["status"] == "SUCCESS"
    assert result["attempts"] == 1
    forecast = result["result"]
    assert forecast["product_sku"] == "BRD-001"
    assert forecast["forecast_days"] == 7
    predicted = [row for row in forecast["chartData"] if row.get("predicted") is not None]
    assert len(predicted) >= 7
    assert forecast["recommendations"] and "accuracy" in forecast
    assert app.receive() == []  # the message was acknowledged


def test_sync_predict_returns_the_forecast_when_the_worker_finishes_in_time(app, monkeypatch):
    # A generous bound: the call returns as soon as the worker is done (a busy machine may
    # take seconds for the fit).
    reset_settings(monkeypatch, SYNC_WAIT_SECONDS="60")
    stop = threading.Event()

    def worker_loop():
        while not stop.is_set():
            if app.run_worker() is None:
                stop.wait(0.05)

    thread = threading.Thread(target=worker_loop, daemon=True)
    thread.start()
    try:
        response = invoke("submit", api_event("submit/predict-sync.json"))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert response["statusCode"] == 200, response["body"]
    body = response_json(response)
    assert body["product_sku"] == "BRD-001"
    assert body["forecast_days"] == 7
    assert body["chartData"] and body["recommendations"]
    assert body["task_id"]


def test_sync_predict_answers_202_with_the_task_id_when_no_worker_runs(app, monkeypatch):
    reset_settings(monkeypatch, SYNC_WAIT_SECONDS="0.3")
    response = invoke("submit", api_event("submit/predict-sync.json"))
    assert response["statusCode"] == 202
    body = response_json(response)
    assert body["status"] == "submitted" and body["task_id"]
    assert "poll" in body["message"]
    assert len(app.receive(visibility=0)) == 1  # still queued for the worker
