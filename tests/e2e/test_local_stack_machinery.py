"""The local stack's machinery, proven on the mini app: every AWS feature the service relies on,
deployed by ``samlocal build && samlocal deploy`` into LocalStack running on the host.

Covers the project's LocalStack plugins (DynamoDB by moto, Lambda functions as local processes
including a container-image function run from source, REST API Lambda authorizers) and what
LocalStack does itself (SQS event source with partial batch failures, DLQ, redrive, schedules).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from boto3.dynamodb.conditions import Key

from scripts import stack
from tests.e2e.conftest import function_processes, http, wait_for


def _table(mini_app):
    import boto3

    return boto3.resource(
        "dynamodb",
        endpoint_url=stack.ENDPOINT,
        region_name=stack.REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106
    ).Table(mini_app["TableName"])


def test_api_without_token_is_401_and_the_backend_is_not_called(mini_app):
    answer = http("GET", f"{mini_app['ApiBase']}/items/a")
    assert answer.status == 401
    assert answer.body == {"message": "Unauthorized"}


def test_api_with_a_token_the_authorizer_rejects_is_401(mini_app):
    answer = http("GET", f"{mini_app['ApiBase']}/items/a", token="not-a-valid-token")  # noqa: S106
    assert answer.status == 401


def test_api_with_a_deny_policy_is_403(mini_app):
    answer = http("GET", f"{mini_app['ApiBase']}/items/a", token="deny")  # noqa: S106
    assert answer.status == 403
    assert "explicit deny" in json.dumps(answer.body)


def test_api_allowed_passes_the_authorizer_context_to_the_backend(mini_app):
    user = f"u{uuid.uuid4().hex[:8]}"
    first = http("GET", f"{mini_app['ApiBase']}/items/a?kind=none", token=f"allow-{user}")
    assert first.status == 200, first.body
    assert first.body["authorizer"]["principalId"] == user
    assert first.body["authorizer"]["user"] == user
    assert first.body["path"] == "/items/a"
    # Same identity within the TTL: the cached policy is used, the authorizer is not called again.
    second = http("GET", f"{mini_app['ApiBase']}/items/b?kind=none", token=f"allow-{user}")
    assert second.status == 200
    calls = first.body["authorizer"]["authorizerCalls"]
    assert second.body["authorizer"]["authorizerCalls"] == calls
    # Another identity: the authorizer runs again.
    other = http("GET", f"{mini_app['ApiBase']}/items/a?kind=none", token=f"allow-x{user}")
    assert other.status == 200
    assert other.body["authorizer"]["principalId"] == f"x{user}"


def test_image_function_runs_from_its_source_with_the_local_endpoint(mini_app):
    lam = stack.client("lambda")
    answer = lam.invoke(
        FunctionName=mini_app["WorkerFunctionName"], Payload=json.dumps({"n": 1}).encode()
    )
    assert "FunctionError" not in answer
    result = json.loads(answer["Payload"].read())
    assert result["echo"] == {"n": 1}
    assert result["task_root"].endswith("tests/e2e/fixtures/mini_app/worker")
    assert result["endpoint"] == stack.ENDPOINT
    assert 0 < result["remaining_ms"] <= 3000


def test_localstack_listens_on_loopback_only(mini_app):
    """LocalStack's twisted server would bind every interface; the project's plugin binds the
    configured host, so the stack (no authentication of its own) is not on the network."""
    port = int(stack.ENDPOINT.rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, _, hex_port = local.rpartition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian, and nothing else


def test_function_timeout_is_enforced_and_the_environment_recovers(mini_app):
    lam = stack.client("lambda")
    answer = lam.invoke(
        FunctionName=mini_app["WorkerFunctionName"], Payload=json.dumps({"sleep": 6}).encode()
    )
    assert answer.get("FunctionError")
    assert "Task timed out after 3.00 seconds" in answer["Payload"].read().decode()
    again = lam.invoke(
        FunctionName=mini_app["WorkerFunctionName"], Payload=json.dumps({"n": 2}).encode()
    )
    assert "FunctionError" not in again
    assert json.loads(again["Payload"].read())["echo"] == {"n": 2}


def test_a_killed_function_process_fails_its_invocation_and_is_replaced(mini_app):
    """A runtime that dies (SIGKILL, out of memory) fails the running invocation as Lambda does
    (``Runtime.ExitError``), instead of leaving LocalStack waiting 15 minutes for an answer."""
    lam = stack.client("lambda")
    name = mini_app["WorkerFunctionName"]
    lam.invoke(FunctionName=name, Payload=b"{}")  # an execution environment is up
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            lam.invoke, FunctionName=name, Payload=json.dumps({"sleep": 2.5}).encode()
        )
        time.sleep(1)  # the invocation is sleeping in the handler
        pids = function_processes(name)
        assert pids
        for pid in pids:
            os.killpg(pid, signal.SIGKILL)
        answer = running.result(timeout=30)
    assert answer.get("FunctionError")
    assert "Runtime exited with error: signal: SIGKILL" in answer["Payload"].read().decode()
    again = lam.invoke(FunctionName=name, Payload=json.dumps({"n": 3}).encode())
    assert "FunctionError" not in again
    assert json.loads(again["Payload"].read())["echo"] == {"n": 3}


def test_function_output_reaches_cloudwatch_logs(mini_app):
    lam = stack.client("lambda")
    marker = uuid.uuid4().hex
    lam.invoke(
        FunctionName=mini_app["WorkerFunctionName"], Payload=json.dumps({"marker": marker}).encode()
    )
    logs = stack.client("logs")
    group = f"/aws/lambda/{mini_app['WorkerFunctionName']}"

    def events():
        found = logs.filter_log_events(logGroupName=group)["events"]
        return [e["message"] for e in found if "START RequestId" in e["message"]]

    assert wait_for(events, 20, what="the function's START line in CloudWatch Logs")


def test_sqs_partial_batch_failure_dlq_and_redrive(mini_app):
    sqs = stack.client("sqs")
    table = _table(mini_app)
    good, bad = f"ok-{uuid.uuid4().hex}", f"fail-{uuid.uuid4().hex}"
    sqs.send_message(QueueUrl=mini_app["QueueUrl"], MessageBody=good)
    sqs.send_message(QueueUrl=mini_app["QueueUrl"], MessageBody=bad)

    # Only the failed message comes back; the good one is processed once.
    wait_for(
        lambda: "Item" in table.get_item(Key={"pk": f"msg#{good}"}),
        60,
        what="the good message to be processed",
    )

    def bad_in_dlq():
        got = sqs.receive_message(
            QueueUrl=mini_app["DeadLetterQueueUrl"],
            WaitTimeSeconds=1,
            VisibilityTimeout=0,
            MaxNumberOfMessages=10,
        )
        return any(m["Body"] == bad for m in got.get("Messages", []))

    wait_for(bad_in_dlq, 90, what="the failing message in the DLQ after maxReceiveCount")
    assert "Item" not in table.get_item(Key={"pk": f"msg#{bad}"})

    # Fix the cause, then redrive the DLQ into its source queue: the message is processed.
    table.put_item(Item={"pk": f"fix#{bad}", "kind": "fix"})
    sqs.start_message_move_task(
        SourceArn=mini_app["DeadLetterQueueArn"], DestinationArn=mini_app["QueueArn"]
    )
    wait_for(
        lambda: "Item" in table.get_item(Key={"pk": f"msg#{bad}"}),
        60,
        what="the redriven message to be processed",
    )


def test_dynamodb_gsi_query(mini_app):
    table = _table(mini_app)
    kind = f"k{uuid.uuid4().hex[:8]}"
    for i in range(3):
        table.put_item(Item={"pk": f"{kind}#{i}", "kind": kind})
    items = table.query(IndexName="by_kind", KeyConditionExpression=Key("kind").eq(kind))["Items"]
    assert sorted(item["pk"] for item in items) == [f"{kind}#{i}" for i in range(3)]


def test_dynamodb_transactions_are_all_or_nothing(mini_app):
    """The plugin's TransactWriteItems (no copy of the table per transaction): a failed
    condition writes nothing and names its item; a write that fails undoes the others."""
    from botocore.exceptions import ClientError

    table = _table(mini_app)
    client = table.meta.client
    name = mini_app["TableName"]
    kind = f"t{uuid.uuid4().hex[:8]}"
    table.put_item(Item={"pk": f"{kind}#a", "kind": kind, "n": 1})

    def update(pk, condition=None, expression="SET n = n + :one"):
        op = {
            "TableName": name,
            "Key": {"pk": pk},
            "UpdateExpression": expression,
            "ExpressionAttributeValues": {":one": 1},
        }
        if condition:
            op["ConditionExpression"] = condition
            op["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Update": op}

    put_b = {"Put": {"TableName": name, "Item": {"pk": f"{kind}#b", "kind": kind}}}
    try:
        client.transact_write_items(
            TransactItems=[put_b, update(f"{kind}#a", condition="n > :one")]
        )
        raise AssertionError("the transaction should have been cancelled")
    except ClientError as cancelled:
        reasons = cancelled.response["CancellationReasons"]
        assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"]
        assert reasons[1]["Item"]["n"] == {"N": "1"}
    assert "Item" not in table.get_item(Key={"pk": f"{kind}#b"})

    # The second write fails as it is applied (a number added to a string): the put before
    # it is undone.
    table.put_item(Item={"pk": f"{kind}#s", "kind": kind, "n": "text"})
    try:
        client.transact_write_items(TransactItems=[put_b, update(f"{kind}#s")])
        raise AssertionError("the transaction should have failed")
    except ClientError:
        pass
    assert "Item" not in table.get_item(Key={"pk": f"{kind}#b"})

    client.transact_write_items(TransactItems=[put_b, update(f"{kind}#a", condition="n = :one")])
    assert table.get_item(Key={"pk": f"{kind}#a"})["Item"]["n"] == 2
    assert table.get_item(Key={"pk": f"{kind}#b"})["Item"]["kind"] == kind


def test_schedule_rate_one_minute_fires_the_function(mini_app):
    table = _table(mini_app)

    def ticks():
        return table.query(IndexName="by_kind", KeyConditionExpression=Key("kind").eq("scheduled"))[
            "Items"
        ]

    # LocalStack's rule timer ticks every ~60 s from its start.
    assert wait_for(ticks, 150, interval_s=3, what="a scheduled invocation")


def test_runtime_ports_are_outside_the_ephemeral_range_and_never_shared():
    """A runtime binds its port a second or more after the executor picked it: a port from
    the kernel's ephemeral range could meanwhile become an outgoing connection's source port
    (under the load test one did: EADDRINUSE, the environment timed out at start)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(stack.__file__).resolve().parents[1]
    probe = (
        "from siprems_localstack.lambda_executor import ephemeral_ports_start, free_port\n"
        "ports = [free_port() for _ in range(500)]\n"
        "print(len(set(ports)), max(ports) < ephemeral_ports_start(), min(ports) >= 20000)\n"
    )
    python = root / ".venv-localstack" / "bin" / "python"
    run = subprocess.run(  # noqa: S603 - the project's own plugin
        [str(python if python.exists() else sys.executable), "-c", probe],
        env={**os.environ, "PYTHONPATH": str(root / "localstack" / "plugins")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.split() == ["500", "True", "True"]
