"""template.yaml: lint-clean as written and after the SAM transform, and consistent with the
code (routes, settings, least privilege, queue timing, layer layout, sample events)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.app import ROOT, load_template

ZIP_FUNCTIONS = ["AuthorizerFunction", "SubmitFunction", "StatusFunction", "TrainAllFunction"]
FUNCTIONS = [*ZIP_FUNCTIONS, "WorkerFunction"]


@pytest.fixture(scope="module")
def template():
    return load_template()


SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"

# Runs in .venv-sam (aws-sam-translator pins its own pydantic): the CloudFormation the SAM
# transform makes of template.yaml, local paths replaced by S3/ECR locations as `sam package`
# does.
TRANSFORM = """
import json, os, sys
from cfnlint.decode import decode_str
from samtranslator.translator.transform import transform

template, _ = decode_str(open(sys.argv[1]).read())
sam = json.loads(json.dumps(template, default=str))
for name, resource in sam["Resources"].items():
    props = resource.get("Properties", {})
    if resource["Type"] == "AWS::Serverless::Function":
        if props.get("PackageType") == "Image":
            props["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/worker:v1"
        else:
            props["CodeUri"] = "s3://artifacts/%s.zip" % name
    elif resource["Type"] == "AWS::Serverless::LayerVersion":
        props["ContentUri"] = "s3://artifacts/%s.zip" % name

class NoManagedPolicies:
    def load(self):
        return {}

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
print(json.dumps(transform(sam, {}, NoManagedPolicies()), default=str))
"""


@pytest.fixture(scope="module")
def transformed():
    if not SAM_PYTHON.exists():
        pytest.skip(".venv-sam (aws-sam-translator) not installed: scripts/bootstrap.sh sam")
    result = subprocess.run(  # noqa: S603 - the project's own interpreter and files
        [str(SAM_PYTHON), "-c", TRANSFORM, str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def lint(path: Path) -> list[str]:
    result = subprocess.run(  # noqa: S603 - our own interpreter and files
        [sys.executable, "-m", "cfnlint", str(path)], capture_output=True, text=True, check=False
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_template_is_lint_clean():
    assert lint(ROOT / "template.yaml") == []


def test_transformed_template_is_lint_clean(transformed, tmp_path):
    path = tmp_path / "transformed.json"
    path.write_text(json.dumps(transformed, indent=1, default=str))
    assert lint(path) == []


def test_each_function_has_its_own_role_without_wildcard_actions(transformed):
    roles = {
        name: res
        for name, res in transformed["Resources"].items()
        if res["Type"] == "AWS::IAM::Role"
    }
    assert set(roles) == {f"{f}Role" for f in FUNCTIONS}
    for name, role in roles.items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                actions = actions if isinstance(actions, list) else [actions]
                assert all("*" not in a for a in actions), (name, actions)
                resources = statement["Resource"]
                resources = resources if isinstance(resources, list) else [resources]
                assert "*" not in resources, (name, statement)


def test_queue_visibility_is_six_times_every_allowed_worker_timeout(template):
    timeouts = template["Parameters"]["WorkerTimeout"]["AllowedValues"]
    mapping = template["Mappings"]["QueueVisibility"]
    for timeout in timeouts:
        assert mapping[str(timeout)]["Seconds"] >= 6 * int(timeout)
    queue = template["Resources"]["JobsQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == {
        "Fn::FindInMap": ["QueueVisibility", {"Ref": "WorkerTimeout"}, "Seconds"]
    }
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["MAX_ATTEMPTS"] == {"Ref": "MaxReceiveCount"}


def test_worker_is_an_image_with_partial_batch_failures(template):
    worker = template["Resources"]["WorkerFunction"]
    props = worker["Properties"]
    assert props["PackageType"] == "Image"
    assert "Runtime" not in props and "Layers" not in props
    event = props["Events"]["Jobs"]["Properties"]
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerMaxConcurrency"}
    meta = worker["Metadata"]
    dockerfile = (ROOT / meta["DockerContext"] / meta["Dockerfile"]).read_text()
    assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.13" in dockerfile
    assert "FROM ${BASE_IMAGE}" in dockerfile
    assert "requirements/worker.txt" in dockerfile
    assert "layers/common/python/siprems" in dockerfile


def test_layer_holds_the_library_and_its_light_dependencies(template):
    layer = template["Resources"]["CommonLayer"]
    content = ROOT / layer["Properties"]["ContentUri"]
    assert layer["Metadata"]["BuildMethod"] == "python3.13"
    # BuildMethod python puts ContentUri's files under python/ in the zip.
    assert (content / "siprems" / "__init__.py").exists()
    layer_pins = {
        line.strip()
        for line in (content / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    project_pins = {
        line.strip()
        for line in (ROOT / "requirements" / "layer.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert layer_pins == {p for p in project_pins if not p.startswith("boto3")}
    assert not any(re.match(r"(prophet|pandas|numpy)\b", p) for p in layer_pins)


def test_nightly_rule_is_a_schedule_from_a_parameter(template):
    assert template["Parameters"]["NightlySchedule"]["Default"] == "cron(0 2 * * ? *)"
    event = template["Resources"]["TrainAllFunction"]["Properties"]["Events"]["Nightly"]
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"] == {"Ref": "NightlySchedule"}


def test_template_routes_are_exactly_the_api_routes():
    from siprems.http.openapi import openapi_document

    template = load_template()
    routes = set()
    for name in ("SubmitFunction", "StatusFunction"):
        for event in template["Resources"][name]["Properties"]["Events"].values():
            assert event["Type"] == "Api"
            routes.add((event["Properties"]["Method"].lower(), event["Properties"]["Path"]))
    documented = {
        (method, path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert routes - {("get", "/api/openapi.json")} == documented


def test_settings_the_code_reads_are_set_by_the_template(template):
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for name in ("JOBS_TABLE", "JOBS_QUEUE_URL", "JOBS_DLQ_URL", "MODELS_BUCKET"):
        assert name in env
    submit = template["Resources"]["SubmitFunction"]["Properties"]["Environment"]["Variables"]
    assert submit["TRAIN_ALL_FUNCTION"] == {"Ref": "TrainAllFunction"}
    assert submit["SYNC_WAIT_SECONDS"] == {"Ref": "SyncWaitSeconds"}
    assert template["Parameters"]["SyncWaitSeconds"]["MaxValue"] < 29


def test_no_secret_values_in_the_template():
    text = (ROOT / "template.yaml").read_text()
    assert 'JWT_SECRET_KEY: ""' in text  # an empty placeholder for local --env-vars only
    assert not re.search(r"(?i)password\s*[:=]\s*\S", text)
    assert template_parameter_noecho("LocalDatabaseUrl")


def template_parameter_noecho(name: str) -> bool:
    return load_template()["Parameters"][name].get("NoEcho") is True


def test_sample_events_are_up_to_date():
    result = subprocess.run(  # noqa: S603 - our own interpreter and files
        [sys.executable, "-m", "scripts.gen_events", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint():
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    if not sam.exists():
        pytest.skip(".venv-sam (aws-sam-cli) not installed: scripts/bootstrap.sh sam")
    result = subprocess.run(  # noqa: S603 - the project's own tool and template
        [str(sam), "validate", "--lint", "--template-file", str(ROOT / "template.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_failure_alarm_watches_the_metric_the_worker_emits(template):
    from siprems.observability import METRICS_NAMESPACE

    alarm = template["Resources"]["JobFailuresAlarm"]["Properties"]
    assert alarm["Namespace"] == METRICS_NAMESPACE
    assert alarm["MetricName"] == "JobsFailed"
    service = template["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": service["POWERTOOLS_SERVICE_NAME"]}]
