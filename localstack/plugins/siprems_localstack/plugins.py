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
