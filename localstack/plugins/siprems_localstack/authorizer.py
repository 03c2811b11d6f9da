"""Lambda authorizers for REST APIs, as API Gateway runs them.

LocalStack's community edition stores a method's Lambda authorizer but never runs it: every
request reaches the backend. This handler sits in the REST API invocation chain
(``preprocess_request``, after routing) and does what API Gateway does for methods with
``authorizationType: CUSTOM``:

- identity sources missing from the request: 401 without calling the authorizer;
- call the authorizer Lambda with the TOKEN or REQUEST event;
- the function fails with ``Unauthorized``: 401; any other failure or a malformed answer: 500;
- the policy denies (or does not allow) ``execute-api:Invoke`` on the method ARN: 403;
- otherwise the answer's ``principalId`` and ``context`` reach the backend as
  ``requestContext.authorizer``;
- answers are cached per authorizer and identity-source values for ``authorizerResultTtlInSeconds``
  (default 300), the cached policy being evaluated against each request's method ARN.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import threading
import time
from dataclasses import dataclass

from localstack.aws.connect import connect_to
from localstack.http import Response
from localstack.services.apigateway.next_gen.execute_api.api import RestApiGatewayHandlerChain
from localstack.services.apigateway.next_gen.execute_api.context import RestApiInvocationContext
from localstack.services.apigateway.next_gen.execute_api.gateway_response import (
    AccessDeniedError,
    AuthorizerConfigurationError,
    UnauthorizedError,
)

LOG = logging.getLogger(__name__)

DEFAULT_TTL_S = 300
FUNCTION_ARN_IN_URI = re.compile(r"functions/(arn:[^/]+)/invocations")


@dataclass(frozen=True)
class AuthorizerAnswer:
    principal_id: str
    policy: dict
    context: dict


class PolicyEvaluation:
    """Evaluates an IAM policy document for ``execute-api:Invoke`` on one method ARN."""

    @staticmethod
    def _as_list(value) -> list:
        return value if isinstance(value, list) else [value]

    @classmethod
    def _matches(cls, statement: dict, method_arn: str) -> bool:
        actions = cls._as_list(statement.get("Action", []))
        if not any(fnmatch.fnmatchcase("execute-api:Invoke", a) or a == "*" for a in actions):
            return False
        resources = cls._as_list(statement.get("Resource", []))
        return any(fnmatch.fnmatchcase(method_arn, r) for r in resources)

    @classmethod
    def allows(cls, policy: dict, method_arn: str) -> bool:
        statements = cls._as_list(policy.get("Statement", []))
        matching = [s for s in statements if cls._matches(s, method_arn)]
        if any(str(s.get("Effect", "")).lower() == "deny" for s in matching):
            return False
        return any(str(s.get("Effect", "")).lower() == "allow" for s in matching)


class LambdaAuthorizerHandler:
    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[float, AuthorizerAnswer]] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        chain: RestApiGatewayHandlerChain,
        context: RestApiInvocationContext,
        response: Response,
    ) -> None:
        method = context.resource_method or {}
        if method.get("authorizationType") != "CUSTOM":
            return
        authorizer = context.deployment.rest_api.authorizers.get(method.get("authorizerId"))
        if not authorizer:
            LOG.warning("Method %s names an unknown authorizer", context.resource.get("path"))
            raise AuthorizerConfigurationError()

        identity = self._identity_values(authorizer, context)
        ttl = int(authorizer.get("authorizerResultTtlInSeconds", DEFAULT_TTL_S) or 0)
        if identity is None:
            raise UnauthorizedError("Unauthorized")
        method_arn = self._method_arn(context)
        cache_key = (context.api_id, authorizer["id"], identity)
        answer = self._cached(cache_key) if ttl > 0 else None
        if answer is None:
            answer = self._invoke(authorizer, context, method_arn)
            if ttl > 0:
                with self._lock:
                    self._cache[cache_key] = (time.monotonic() + ttl, answer)
        if not PolicyEvaluation.allows(answer.policy, method_arn):
            raise AccessDeniedError(
                "User is not authorized to access this resource with an explicit deny"
            )
        # What the backend sees as requestContext.authorizer (values are strings, as on AWS).
        authorizer_vars = {key: str(value) for key, value in answer.context.items()}
        authorizer_vars["principalId"] = answer.principal_id
        context.context_variables["authorizer"] = authorizer_vars

    # -- helpers -----------------------------------------------------------------------------
    def _cached(self, key: tuple) -> AuthorizerAnswer | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry and entry[0] > time.monotonic():
                return entry[1]
            self._cache.pop(key, None)
        return None

    @staticmethod
    def _identity_values(authorizer: dict, context: RestApiInvocationContext) -> tuple | None:
        """The values of the identity sources, or None when one is missing (401)."""
        request = context.invocation_request
        sources = [s.strip() for s in (authorizer.get("identitySource") or "").split(",") if s]
        values = []
        for source in sources:
            if source.startswith("method.request.header."):
                value = request["headers"].get(source.removeprefix("method.request.header."))
            elif source.startswith("method.request.querystring."):
                name = source.removeprefix("method.request.querystring.")
                value = request["query_string_parameters"].get(name)
            elif source.startswith("stageVariables."):
                value = (context.stage_variables or {}).get(source.removeprefix("stageVariables."))
            elif source.startswith("context."):
                value = context.context_variables.get(source.removeprefix("context."))
            else:
                value = None
            if not value:
                return None
            values.append(str(value))
        return tuple(values)

    @staticmethod
    def _method_arn(context: RestApiInvocationContext) -> str:
        path = context.invocation_request["path"].lstrip("/")
        return (
            f"arn:aws:execute-api:{context.region}:{context.account_id}:{context.api_id}/"
            f"{context.stage}/{context.invocation_request['http_method']}/{path}"
        )

    @staticmethod
    def _event(authorizer: dict, context: RestApiInvocationContext, method_arn: str) -> dict:
        request = context.invocation_request
        if authorizer.get("type") == "TOKEN":
            header = (authorizer.get("identitySource") or "").removeprefix("method.request.header.")
            return {
                "type": "TOKEN",
                "authorizationToken": request["headers"].get(header),
                "methodArn": method_arn,
            }
        headers = dict(request["headers"].items())
        return {
            "type": "REQUEST",
            "methodArn": method_arn,
            "resource": context.resource["path"],
            "path": request["path"],
            "httpMethod": request["http_method"],
            "headers": headers,
            "multiValueHeaders": {k: request["headers"].getlist(k) for k in headers},
            "queryStringParameters": request["query_string_parameters"] or {},
            "multiValueQueryStringParameters": request["multi_value_query_string_parameters"] or {},
            "pathParameters": request.get("path_parameters") or {},
            "stageVariables": context.stage_variables or {},
            "requestContext": context.context_variables,
        }

    def _invoke(
        self, authorizer: dict, context: RestApiInvocationContext, method_arn: str
    ) -> AuthorizerAnswer:
        match = FUNCTION_ARN_IN_URI.search(authorizer.get("authorizerUri") or "")
        if not match:
            LOG.warning("Authorizer %s has no Lambda function URI", authorizer.get("id"))
            raise AuthorizerConfigurationError()
        function_arn = match.group(1)
        region = function_arn.split(":")[3]
        event = self._event(authorizer, context, method_arn)
        client = connect_to(region_name=region).lambda_
        result = client.invoke(
            FunctionName=function_arn,
            Payload=json.dumps(event, default=str).encode(),
            InvocationType="RequestResponse",
        )
        payload = result["Payload"].read()
        if result.get("FunctionError"):
            try:
                message = json.loads(payload).get("errorMessage")
            except (ValueError, AttributeError):
                message = None
            if message == "Unauthorized":
                raise UnauthorizedError("Unauthorized")
            LOG.warning("Authorizer %s failed: %s", function_arn, payload[:500])
            raise AuthorizerConfigurationError()
        try:
            answer = json.loads(payload)
            return AuthorizerAnswer(
                principal_id=str(answer["principalId"]),
                policy=answer["policyDocument"],
                context=answer.get("context") or {},
            )
        except (ValueError, KeyError, TypeError):
            LOG.warning("Authorizer %s gave a malformed answer: %s", function_arn, payload[:500])
            raise AuthorizerConfigurationError() from None
