"""Entry points of the plugins (see pyproject.toml)."""

import logging

from localstack.runtime import hooks
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin

LOG = logging.getLogger(__name__)


class LocalProcessRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    """Selected with ``LAMBDA_RUNTIME_EXECUTOR=local-process``."""

    name = "local-process"

    def load(self, *args, **kwargs):
        from siprems_localstack.lambda_executor import LocalProcessRuntimeExecutor

        return LocalProcessRuntimeExecutor


@hooks.on_infra_start()
def register_lambda_authorizers():
    """Puts the Lambda authorizer step into every REST API invocation (after routing)."""
    from localstack.services.apigateway.next_gen.execute_api import handlers

    from siprems_localstack.authorizer import LambdaAuthorizerHandler

    handlers.preprocess_request.append(LambdaAuthorizerHandler())


@hooks.on_infra_start()
def fix_find_in_map_with_number_keys():
    """``Fn::FindInMap`` keyed by a ``Number`` parameter (e.g. a timeout) fails in LocalStack's
    CloudFormation engine: it turns the parameter into an int, while mapping keys are strings (as
    on AWS, where every parameter value is a string). Look the key up as a string."""
    from localstack.services.cloudformation.engine.v2.change_set_model_preproc import (
        ChangeSetModelPreproc,
    )

    original = ChangeSetModelPreproc._resolve_mapping
    if getattr(original, "keys_as_strings", False):
        return

    def _resolve_mapping(self, map_name, top_level_key, second_level_key):
        def as_key(key):
            if isinstance(key, float) and key.is_integer():
                key = int(key)
            return str(key) if isinstance(key, int | float) and not isinstance(key, bool) else key

        return original(self, map_name, as_key(top_level_key), as_key(second_level_key))

    _resolve_mapping.keys_as_strings = True
    ChangeSetModelPreproc._resolve_mapping = _resolve_mapping


@hooks.on_infra_start()
def register_fault_injection():
    """Fault rules for the reliability tests: ``/_siprems/faults`` sets them, a request handler
    fails the AWS requests they match (siprems_localstack.faults)."""
    from siprems_localstack import faults

    faults.register()


@hooks.on_infra_start()
def apply_gateway_responses():
    """A REST API's gateway responses as on AWS: the template's own bodies, status codes and
    headers (401, 403, an unknown route's 404, the 4XX/5XX defaults).

    LocalStack's importer ignores ``x-amazon-apigateway-gateway-responses`` in an OpenAPI body
    (what SAM deploys), and its error step never applies a response's templates or header
    parameters: every 401 answered ``{"message": "Unauthorized"}``, outside the API's documented
    error body. Both are filled in here: the import stores them as PutGatewayResponse would,
    and an error answer uses its configured ``application/json`` template (static text, with
    ``$context.error.messageString`` / ``message``) and static header values."""
    import json

    from localstack.http import Response
    from localstack.services.apigateway.helpers import get_apigateway_store
    from localstack.services.apigateway.legacy import provider
    from localstack.services.apigateway.next_gen.execute_api.gateway_response import (
        build_gateway_response,
        get_gateway_response_or_default,
    )
    from localstack.services.apigateway.next_gen.execute_api.handlers import gateway_exception

    original_import = provider.import_api_from_openapi_spec
    if getattr(original_import, "with_gateway_responses", False):
        return

    def import_api_from_openapi_spec(rest_api, context, open_api_spec, mode):
        rest_api, warnings = original_import(rest_api, context, open_api_spec, mode)
        responses = open_api_spec.get("x-amazon-apigateway-gateway-responses") or {}
        container = get_apigateway_store(context=context).rest_apis.get(rest_api.id)
        for response_type, spec in responses.items() if container else ():
            status = spec.get("statusCode")
            container.gateway_responses[response_type] = build_gateway_response(
                response_type=response_type,
                status_code=str(status) if status is not None else None,
                response_parameters=spec.get("responseParameters"),
                response_templates=spec.get("responseTemplates"),
                default_response=False,
            )
        return rest_api, warnings

    import_api_from_openapi_spec.with_gateway_responses = True
    provider.import_api_from_openapi_spec = import_api_from_openapi_spec

    handler = gateway_exception.GatewayExceptionHandler
    original_answer = handler.create_exception_response

    def create_exception_response(self, exception, context):
        answer = original_answer(self, exception, context)
        try:
            return configured_answer(answer, exception, context)
        except Exception:  # noqa: BLE001 - a failing error step would answer 200 with no body
            LOG.exception("gateway response %s could not be applied", exception.type)
            return answer

    def configured_answer(answer, exception, context):
        configured = get_gateway_response_or_default(
            exception.type, context.deployment.rest_api.gateway_responses
        )
        template = (configured.get("responseTemplates") or {}).get("application/json")
        if configured.get("defaultResponse", True) or template is None:
            return answer
        body = template.replace(
            "$context.error.messageString", json.dumps(exception.message)
        ).replace("$context.error.message", exception.message)
        headers = dict(answer.headers)
        for name, value in (configured.get("responseParameters") or {}).items():
            if name.startswith("gatewayresponse.header.") and value[:1] == value[-1:] == "'":
                headers[name.removeprefix("gatewayresponse.header.")] = value[1:-1]
        headers.pop("Content-Length", None)
        status = configured.get("statusCode") or answer.status_code
        return Response(response=body, headers=headers, status=int(status))

    handler.create_exception_response = create_exception_response


@hooks.on_infra_start()
def gateway_listens_on_its_configured_host():
    """LocalStack's twisted gateway server (its default; a request costs it about a fifth less
    CPU than hypercorn, and it keeps boto3's connections open where hypercorn answers
    ``Connection: close``) binds every interface whatever ``GATEWAY_LISTEN`` says: it passes
    no interface for IPv4. The project's stack stays on the configured (loopback) host."""
    from localstack.runtime.server import twisted as twisted_server
    from twisted.internet import endpoints, reactor

    from localstack import config

    server = twisted_server.TwistedRuntimeServer
    if getattr(server.register, "binds_configured_host", False):
        return

    def register(self, gateway, listen, ssl_creds=None):
        # LocalStack's own register, with the interface passed on
        protocol_factory = site = twisted_server.TwistedGateway(gateway)
        if ssl_creds:  # plain HTTP and TLS on the same port, told apart by the first bytes
            cert_file_name, key_file_name = ssl_creds
            context = twisted_server.ssl.DefaultOpenSSLContextFactory(key_file_name, cert_file_name)
            context.getContext().use_certificate_chain_file(cert_file_name)
            protocol_factory = twisted_server.TLSMultiplexerFactory(context, False, site)
        for host_and_port in listen:
            endpoint = (
                endpoints.TCP6ServerEndpoint
                if config.is_ipv6_address(host_and_port.host)
                else endpoints.TCP4ServerEndpoint
            )
            endpoint(reactor, host_and_port.port, interface=host_and_port.host).listen(
                protocol_factory
            )

    register.binds_configured_host = True
    server.register = register


@hooks.on_infra_start()
def no_lambda_invocation_metric():
    """LocalStack records an ``AWS/Lambda Invocations`` data point for every successful
    invocation (a thread, a CloudWatch call and an SQLite commit each: a tenth of its CPU while
    submits run). Nothing here reads it: the dashboard's Lambda widgets show errors, throttles
    and duration, and failed invocations are still recorded (with their ``Errors`` point)."""
    from localstack.services.lambda_.invocation import version_manager

    version_manager.record_cw_metric_invocation = lambda **_kwargs: None
