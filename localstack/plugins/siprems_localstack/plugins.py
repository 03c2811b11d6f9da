"""Entry points of the plugins (see pyproject.toml)."""

from localstack.runtime import hooks
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin


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
