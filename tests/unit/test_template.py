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
from tests.fixtures.jobs_table import jobs_table_definition

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


# cfn-lint's own script beside this interpreter: the cfnlint package has no __main__, so
# ``python -m cfnlint`` prints only an error to stderr, and a check of stdout alone would pass.
CFN_LINT = Path(sys.executable).with_name("cfn-lint")


def lint(path: Path) -> list[str]:
    result = subprocess.run(  # noqa: S603 - our own interpreter's tool and files
        [str(CFN_LINT), str(path)], capture_output=True, text=True, check=False
    )
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return findings or ([] if result.returncode == 0 else [f"cfn-lint exit {result.returncode}"])


def test_template_is_lint_clean():
    assert lint(ROOT / "template.yaml") == []


def test_transformed_template_is_lint_clean(transformed, tmp_path):
    path = tmp_path / "transformed.json"
    path.write_text(json.dumps(transformed, indent=1, default=str))
    assert lint(path) == []


# --- least privilege ---------------------------------------------------------------------------
# What a function "uses" is derived, not declared: the resources its environment variables,
# event sources and log configuration name in the template, and the AWS calls the code it
# imports can make (boto3 operation names and the Powertools parameter helpers found in the
# layer modules its handler reaches). Every statement of its role must stay inside both.
LAYER = ROOT / "layers" / "common" / "python"
AWS_SERVICES = ("dynamodb", "s3", "sqs", "lambda", "ssm", "secretsmanager")
# API operations whose IAM action has another name, or that need more actions than their own.
IAM_ACTIONS = {
    "s3:ListObjectsV2": {"s3:ListBucket"},
    "s3:ListObjects": {"s3:ListBucket"},
    "s3:HeadObject": {"s3:GetObject"},
    # a GetObject with a VersionId (the model store reads the version its metadata names)
    "s3:GetObject": {"s3:GetObject", "s3:GetObjectVersion"},
    "lambda:Invoke": {"lambda:InvokeFunction"},
    "dynamodb:TransactWriteItems": {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
    },
    "sqs:SendMessageBatch": {"sqs:SendMessage"},
    # the redrive reads the dead-letter queue and sends to the jobs queue with the caller's role
    "sqs:StartMessageMoveTask": {
        "sqs:StartMessageMoveTask",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:SendMessage",
    },
}
# Powertools helpers that call AWS for the code.
POWERTOOLS_CALLS = {
    "get_parameter": {"ssm:GetParameter"},
    "get_secret": {"secretsmanager:GetSecretValue"},
    "SecretsProvider": {"secretsmanager:GetSecretValue"},
}
# The one place a wildcard resource is accepted: actions without resource-level permissions.
WILDCARD_EXCEPTIONS = {
    # X-Ray: PutTraceSegments and PutTelemetryRecords support no resource ARN.
    "Tracing": {"xray:PutTraceSegments", "xray:PutTelemetryRecords"},
    # The network interfaces Lambda creates for a function in a VPC (only with the VPC
    # parameters set): ec2:Describe* has no resource-level permissions and Lambda checks the
    # others on "*" when it creates the function.
    "VpcNetworkInterfaces": {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    },
}
# Actions Lambda itself takes with the role (logs, traces, VPC), not the function's code.
RUNTIME_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"} | set().union(
    *WILDCARD_EXCEPTIONS.values()
)
# An SQS event source mapping polls the queue with the function's role.
EVENT_SOURCE_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statements_of(role: dict) -> list[tuple[dict, str | None]]:
    """Every statement of the role's inline policies, both branches of an Fn::If (with the
    condition's name)."""
    found = []
    for policy in role["Properties"].get("Policies", []):
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            if isinstance(statement, dict) and "Fn::If" in statement:
                condition, *branches = statement["Fn::If"]
                found += [(b, condition) for b in branches if b != {"Ref": "AWS::NoValue"}]
            else:
                found.append((statement, None))
    return found


def references(value) -> set[str]:
    """The template resources and parameters a value names (Ref, GetAtt, Sub variables)."""
    names: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref":
                names.add(inner)
            elif key == "Fn::GetAtt":
                names.add(as_list(inner)[0].split(".")[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                names |= {n.split(".")[0] for n in re.findall(r"\$\{([^}!]+)\}", text)}
                if not isinstance(inner, str):
                    names |= references(inner[1])
            else:
                names |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            names |= references(inner)
    return {n for n in names if not n.startswith("AWS::")}


def layer_modules(function: str) -> set[Path]:
    """The function's handler and every layer module it imports, directly or not."""
    import ast

    seen: set[Path] = set()
    todo = [ROOT / "functions" / function / "app.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] != "siprems":
                    continue
                parts = module.split(".")
                for depth in range(1, len(parts) + 1):  # packages run their __init__
                    base = LAYER.joinpath(*parts[:depth])
                    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                        if candidate.exists():
                            todo.append(candidate)
    return seen


def code_actions(function: str) -> set[str]:
    """The IAM actions the function's code can need: AWS operation names (as called or as the
    strings its adapters dispatch on) found in the modules it reaches."""
    import ast

    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    operations: dict[str, set[str]] = {}
    for service in AWS_SERVICES:
        for operation in session.get_service_model(service).operation_names:
            action = f"{service}:{operation}"
            operations.setdefault(xform_name(operation), set()).update(
                IAM_ACTIONS.get(action, {action})
            )
    for name, actions in POWERTOOLS_CALLS.items():
        operations.setdefault(name, set()).update(actions)
    actions: set[str] = set()
    for path in layer_modules(function):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            else:
                continue
            actions |= operations.get(name, set())
    return actions


def function_roles(transformed) -> dict[str, tuple[str, dict, dict]]:
    """function folder -> (logical id, function resource, role resource)."""
    resources = transformed["Resources"]
    found = {}
    for name in FUNCTIONS:
        function = resources[name]
        role_name = function["Properties"]["Role"]["Fn::GetAtt"][0]
        folder = {"AuthorizerFunction": "authorizer", "SubmitFunction": "submit"}.get(name)
        folder = folder or {"StatusFunction": "status", "WorkerFunction": "worker"}.get(name)
        found[folder or "train_all"] = (name, function, resources[role_name])
    return found


def uses(transformed, name: str, function: dict) -> set[str]:
    """What the template says the function works with: the resources and parameters its
    environment, event source mappings, log configuration and dead-letter queue (where
    Lambda puts its failed asynchronous events) name."""
    properties = function["Properties"]
    used = (
        references(properties.get("Environment", {}))
        | references(properties.get("LoggingConfig", {}))
        | references(properties.get("DeadLetterConfig", {}))
    )
    for resource in transformed["Resources"].values():
        if resource["Type"] == "AWS::Lambda::EventSourceMapping" and references(
            resource["Properties"]["FunctionName"]
        ) == {name}:
            used |= references(resource["Properties"]["EventSourceArn"])
    return used


def polls_a_queue(transformed, name: str) -> bool:
    return any(
        r["Type"] == "AWS::Lambda::EventSourceMapping"
        and references(r["Properties"]["FunctionName"]) == {name}
        for r in transformed["Resources"].values()
    )


def test_each_function_has_its_own_role_and_no_managed_policies(transformed):
    roles = {
        name: res
        for name, res in transformed["Resources"].items()
        if res["Type"] == "AWS::IAM::Role"
    }
    assert set(roles) == {f"{f}Role" for f in FUNCTIONS}
    for name, role in roles.items():
        # SAM's managed policies grant logs, SQS and EC2 actions on every resource.
        assert not role["Properties"].get("ManagedPolicyArns"), name
        assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ]


def test_no_wildcard_action_or_resource_beyond_the_documented_exceptions(transformed):
    vpc_functions = {
        name for name in FUNCTIONS if "VpcConfig" in transformed["Resources"][name]["Properties"]
    }
    for folder, (name, _, role) in function_roles(transformed).items():
        for statement, condition in statements_of(role):
            actions = set(as_list(statement["Action"]))
            assert all("*" not in action for action in actions), (folder, statement)
            assert statement["Effect"] == "Allow", (folder, statement)
            resources = as_list(statement["Resource"])
            wildcard = [r for r in resources if isinstance(r, str) and r.split(":")[-1] == "*"]
            if not wildcard:
                continue
            sid = statement.get("Sid")
            assert sid in WILDCARD_EXCEPTIONS, (folder, statement)
            assert actions <= WILDCARD_EXCEPTIONS[sid], (folder, statement)
            if sid == "VpcNetworkInterfaces":
                assert (condition, name in vpc_functions) == ("HasVpc", True), (folder, sid)


def test_each_role_reaches_only_what_its_function_uses(transformed):
    for folder, (name, function, role) in function_roles(transformed).items():
        used = uses(transformed, name, function)
        allowed = code_actions(folder) | RUNTIME_ACTIONS
        if polls_a_queue(transformed, name):
            allowed |= EVENT_SOURCE_ACTIONS
        for statement, _ in statements_of(role):
            actions = set(as_list(statement["Action"]))
            assert actions <= allowed, (folder, "code never needs", actions - allowed)
            reached = references(statement["Resource"])
            assert reached <= used, (folder, "uses none of", reached - used)


def granted(role: dict, action: str) -> list:
    """The resources of every statement of ``role`` that allows ``action``."""
    found = []
    for statement, _ in statements_of(role):
        if action in as_list(statement["Action"]):
            found += as_list(statement["Resource"])
    return found


def test_the_worker_may_read_the_model_versions_its_metadata_names(transformed):
    """``ModelStore`` reads a model at the version its metadata names (``VersionId``): on AWS
    that GetObject needs s3:GetObjectVersion (moto and LocalStack do not check IAM)."""
    import inspect

    from siprems.model_store import ModelStore

    assert '"VersionId"' in inspect.getsource(ModelStore._load_versioned)
    _, _, role = function_roles(transformed)["worker"]
    for action in ("s3:GetObject", "s3:GetObjectVersion"):
        resources = granted(role, action)
        assert {"Fn::Sub": "${ModelsBucket.Arn}/models/*"} in resources, (action, resources)


def test_the_worker_and_train_all_may_record_a_job_queued_before_its_item(transformed):
    """The submit routes queue a job (or invoke train_all), then record it: the worker (and
    train_all, for its parent) records one whose item does not exist yet with a PutItem of
    its own, which IAM checks as such (moto and LocalStack do not check IAM)."""
    for function in ("worker", "train_all"):
        _, _, role = function_roles(transformed)[function]
        assert {"Fn::GetAtt": ["JobsTable", "Arn"]} in granted(role, "dynamodb:PutItem"), function


def test_the_status_function_queries_the_indexes_only(transformed):
    _, _, role = function_roles(transformed)["status"]
    assert granted(role, "dynamodb:Query") == [{"Fn::Sub": "${JobsTable.Arn}/index/*"}]


def test_a_large_result_expires_with_its_job(template):
    rules = template["Resources"]["ModelsBucket"]["Properties"]["LifecycleConfiguration"]
    forecasts = [r for r in rules["Rules"] if r.get("Prefix") == "forecasts/"]
    assert [r.get("ExpirationInDays") for r in forecasts] == [{"Ref": "JobTtlDays"}, None]
    # the delete marker an expired result leaves goes too (a rule of its own: S3 refuses
    # ExpiredObjectDeleteMarker next to ExpirationInDays)
    assert forecasts[1]["ExpiredObjectDeleteMarker"] is True


def test_the_jobs_table_survives_a_delete_outside_the_stack(template):
    table = template["Resources"]["JobsTable"]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert table["Properties"]["DeletionProtectionEnabled"] is True


def test_train_all_may_batch_write_and_read_the_jobs_table(transformed):
    """The fan-out writes children and its SKU list's shards with BatchWriteItem and reads
    the shards back with BatchGetItem: IAM actions of their own (a GetItem or PutItem grant
    does not cover them), on the jobs table only."""
    _, _, role = function_roles(transformed)["train_all"]
    on_table = set()
    for statement, _ in statements_of(role):
        if references(statement["Resource"]) == {"JobsTable"}:
            on_table |= set(as_list(statement["Action"]))
    batch = {"dynamodb:BatchWriteItem", "dynamodb:BatchGetItem"}
    assert batch <= code_actions("train_all")
    assert batch <= on_table


def test_a_failed_train_all_event_goes_to_the_jobs_dlq_and_comes_back_through_the_worker(
    transformed,
):
    """Lambda retries a failed asynchronous event twice, then dead-letters it with the
    function's role: exactly SendMessage on the jobs DLQ. The worker invokes train_all again
    for a redriven trigger: exactly InvokeFunction on that one function."""
    resources = transformed["Resources"]
    name, function, role = function_roles(transformed)["train_all"]
    properties = function["Properties"]
    assert properties["DeadLetterConfig"] == {
        "TargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    }
    configs = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"
    ]
    assert len(configs) == 1
    config = configs[0]
    assert references(config["FunctionName"]) == {name}
    assert config["Qualifier"] == "$LATEST"
    assert config["MaximumRetryAttempts"] == 2
    assert 60 <= config["MaximumEventAgeInSeconds"] <= 3600
    on_dlq = [
        s for s, _ in statements_of(role) if "JobsDeadLetterQueue" in references(s["Resource"])
    ]
    assert on_dlq == [
        {
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        }
    ]

    worker_name, worker, worker_role = function_roles(transformed)["worker"]
    env = worker["Properties"]["Environment"]["Variables"]
    assert env["TRAIN_ALL_FUNCTION"] == {"Ref": name}
    on_lambda = [
        s
        for s, _ in statements_of(worker_role)
        if any(a.startswith("lambda:") for a in as_list(s["Action"]))
    ]
    assert on_lambda == [
        {
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": {"Fn::GetAtt": [name, "Arn"]},
        }
    ]
    # No other function dead-letters its events or may start train_all.
    for folder, (other, fn, other_role) in function_roles(transformed).items():
        if other != name:
            assert "DeadLetterConfig" not in fn["Properties"], folder
        if other not in (name, worker_name, "SubmitFunction"):
            for statement, _ in statements_of(other_role):
                assert "lambda:InvokeFunction" not in as_list(statement["Action"]), folder


def test_the_authorizer_reaches_nothing_but_its_signing_key(transformed):
    _, function, role = function_roles(transformed)["authorizer"]
    own = [
        (statement, references(statement["Resource"]))
        for statement, _ in statements_of(role)
        if not set(as_list(statement["Action"])) <= RUNTIME_ACTIONS
    ]
    assert [(s["Action"], reached) for s, reached in own] == [
        ("ssm:GetParameter", {"JwtSecretParameterName"})
    ]
    environment = function["Properties"]["Environment"]["Variables"]
    assert not {"JOBS_TABLE", "MODELS_BUCKET", "DATABASE_URL", "DATABASE_SECRET_NAME"} & set(
        environment
    )


def test_the_database_secret_reaches_only_functions_whose_code_reads_sales(transformed):
    database = {"DatabaseSecretName", "LocalDatabaseUrl"}
    holders = set()
    for folder, (_, function, role) in function_roles(transformed).items():
        environment = references(function["Properties"].get("Environment", {}))
        secret = any(
            "secretsmanager:GetSecretValue" in as_list(s["Action"]) for s, _ in statements_of(role)
        )
        assert bool(environment & database) == secret, folder
        if secret:
            assert LAYER / "siprems" / "sales" / "db.py" in layer_modules(folder), folder
            holders.add(folder)
    # the status function shows jobs, queues and models: it never opens the sales database
    assert holders == {"submit", "worker", "train_all"}


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
    # transitive packages pinned by the lock, which is copied into the image to be read
    copied = {
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert "requirements/lock.txt" in copied
    assert all((ROOT / meta["DockerContext"] / source).exists() for source in copied)
    assert "-c /tmp/requirements/lock.txt" in dockerfile


def test_layer_holds_the_library_and_its_light_dependencies(template):
    layer = template["Resources"]["CommonLayer"]
    content = ROOT / layer["Properties"]["ContentUri"]
    assert layer["Metadata"]["BuildMethod"] == "python3.13"
    # BuildMethod python puts ContentUri's files under python/ in the zip.
    assert (content / "siprems" / "__init__.py").exists()
    lines = (content / "requirements.txt").read_text().splitlines()
    layer_pins = {line.strip() for line in lines if line.strip() and line[0] not in "#-"}
    # pip reads a nested -c relative to the requirements file, where sam build leaves it
    constraints = [
        (content / line.split()[1]).resolve() for line in lines if line.startswith("-c ")
    ]
    assert constraints == [ROOT / "requirements" / "lock.txt"]
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
    def env(function: str) -> dict:
        return {
            **template["Globals"]["Function"]["Environment"]["Variables"],
            **template["Resources"][function]["Properties"]["Environment"]["Variables"],
        }

    for function in ("SubmitFunction", "StatusFunction", "WorkerFunction", "TrainAllFunction"):
        assert {"JOBS_TABLE", "JOBS_QUEUE_URL"} <= set(env(function)), function
    for function in ("SubmitFunction", "StatusFunction", "WorkerFunction"):
        assert "MODELS_BUCKET" in env(function), function
    assert "JOBS_DLQ_URL" in env("StatusFunction")
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


def test_every_alarm_notifies_the_topic_when_one_is_given(transformed):
    """An alarm without an action is seen only by whoever opens the console."""
    resources = transformed["Resources"]
    alarms = {
        k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == notify and alarm["OKActions"] == notify, name

    def watched(alarm):
        [dimension] = alarm["Dimensions"]
        return alarm["Namespace"], alarm["MetricName"], json.dumps(dimension["Value"])

    # what fails without any job failing: messages no worker takes, an authorizer that
    # answers every request with 500, a nightly event never delivered
    assert {watched(a) for a in alarms.values()} >= {
        (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            json.dumps({"Fn::GetAtt": ["JobsQueue", "QueueName"]}),
        ),
        (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            json.dumps({"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}),
        ),
        ("AWS/Lambda", "Errors", json.dumps({"Ref": "AuthorizerFunction"})),
        ("AWS/Events", "FailedInvocations", json.dumps({"Fn::Sub": "${AWS::StackName}-nightly"})),
    }
    rule = resources["TrainAllFunctionNightly"]
    assert rule["Type"] == "AWS::Events::Rule"
    assert rule["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-nightly"}


def test_traces_keep_no_answers_and_the_api_is_throttled(template):
    """A traced answer over X-Ray's 64 KB segment limit drops the whole segment (a full
    history, Swagger UI's script), and the authorizer's answer names the caller. A runaway
    client meets API Gateway's 429 before it takes the account's Lambda concurrency."""
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
    [limits] = template["Resources"]["Api"]["Properties"]["MethodSettings"]
    assert (limits["ResourcePath"], limits["HttpMethod"]) == ("/*", "*")
    assert limits["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
    assert limits["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurstLimit"}


# --- the jobs table's status index ---------------------------------------------------------------
# Attributes of a job item no listing shows (JobStore.list_by_status -> job_view, the status
# page's failures): results and the SKU list that parents started before its shard items kept
# (skus_gz) are large, and with them in the index each of their writes would be paid twice;
# the rest is read through JobStore.get only.
NOT_IN_STATUS_INDEX = {
    "result_gz",
    "result_key",
    "skus_gz",
    "skus_owner",
    "skus_shards",
    "fanout_owner",
    "fanout_until",
    "fanned_out_at",
    "updated_at",
    "requested_by",
    "dead_lettered",
    "parent_counted",
    "attempts_before_redrive",
}
# What JobStore writes on a train_all parent besides a Job's own fields.
PARENT_ATTRIBUTES = {
    "skus_gz",  # read on parents started before the list moved to shard items
    "skus_owner",
    "skus_shards",
    "fanout_owner",
    "fanout_until",
    "fanned_out_at",
}
LEGACY_STATUS_INDEX = "by_status"  # projection ALL, in stacks created before by_status_summary


def job_item_attributes() -> set[str]:
    """Every attribute a job item can have."""
    from siprems.jobs.model import ChildCounts, Job

    store_source = (LAYER / "siprems" / "jobs" / "store.py").read_text()
    assert all(name in store_source for name in PARENT_ATTRIBUTES)
    fields = set(Job.model_fields) - {"children"}  # stored as children_*
    counters = {f"children_{name}" for name in ChildCounts.model_fields}
    return fields | counters | {"result_gz"} | PARENT_ATTRIBUTES


def test_status_index_projects_what_listings_show_and_no_result_or_sku_list(template):
    from siprems.jobs.store import STATUS_INDEX

    table = template["Resources"]["JobsTable"]["Properties"]
    indexes = jobs_table_definition(template)["GlobalSecondaryIndexes"]
    (index,) = [i for i in indexes if i["IndexName"] == STATUS_INDEX]
    keys = {k["AttributeName"] for k in [*table["KeySchema"], *index["KeySchema"]]}
    assert index["Projection"]["ProjectionType"] == "INCLUDE"
    projected = keys | set(index["Projection"]["NonKeyAttributes"])
    assert projected == job_item_attributes() - NOT_IN_STATUS_INDEX
    assert not projected & {"result_gz", "result_key", "skus_owner", "skus_shards", "skus_gz"}
    # DynamoDB's quota on projected non-key attributes over all of a table's indexes: 100
    # now, 20 in older quotas (the legacy index projects ALL, which does not count).
    assert sum(len(i["Projection"].get("NonKeyAttributes", [])) for i in indexes) <= 20


def test_an_existing_stack_moves_to_the_new_status_index_one_index_per_update(template):
    """CloudFormation adds or removes one GSI per update (both at once fails): a stack with
    the legacy index upgrades with KeepLegacyStatusIndex=true (one added), then the default
    (one removed)."""
    from siprems.jobs.store import PARENT_INDEX, STATUS_INDEX

    before = {LEGACY_STATUS_INDEX, PARENT_INDEX}
    assert template["Parameters"]["KeepLegacyStatusIndex"]["Default"] == "false"
    kept = json.loads(json.dumps(template))
    kept["Parameters"]["KeepLegacyStatusIndex"]["Default"] = "true"
    upgrading = jobs_table_definition(kept)["GlobalSecondaryIndexes"]
    after = {i["IndexName"] for i in jobs_table_definition(template)["GlobalSecondaryIndexes"]}
    names = {i["IndexName"] for i in upgrading}
    assert (names - before, before - names) == ({STATUS_INDEX}, set())
    assert (names - after, after - names) == ({LEGACY_STATUS_INDEX}, set())
    legacy, current = (
        next(i for i in upgrading if i["IndexName"] == name)
        for name in (LEGACY_STATUS_INDEX, STATUS_INDEX)
    )
    assert legacy["KeySchema"] == current["KeySchema"]
    assert legacy["Projection"] == {"ProjectionType": "ALL"}
