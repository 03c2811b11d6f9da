"""DynamoDB served by moto inside LocalStack.

The default provider runs DynamoDB Local, which LocalStack downloads (with a JDK) on first use;
offline that fails. moto's DynamoDB backend (already part of LocalStack, as ``moto-ext``) answers
every operation instead: tables, conditions, GSIs, transactions, TTL settings (items are not
expired), streams configuration.
"""

from localstack.aws.api.dynamodb import DynamodbApi
from localstack.services.plugins import Service, ServiceLifecycleHook, aws_provider


class MotoDynamoDBProvider(DynamodbApi, ServiceLifecycleHook):
    """Implements nothing itself: every operation falls through to moto."""


@aws_provider(api="dynamodb", name="moto")
def dynamodb_moto():
    from localstack.services.moto import MotoFallbackDispatcher

    return Service.for_provider(
        MotoDynamoDBProvider(), dispatch_table_factory=MotoFallbackDispatcher
    )
