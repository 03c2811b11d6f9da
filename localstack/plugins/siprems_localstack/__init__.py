"""LocalStack plugins that let the community edition run this project offline, on the host.

- ``dynamodb:moto``: DynamoDB served by moto (the default provider downloads DynamoDB Local).
- ``local-process`` Lambda runtime executor: functions run as local processes, not containers.
- REST API Lambda authorizers enforced in the API Gateway invocation chain.
- Fault injection: AWS requests matching a rule set at ``/_siprems/faults`` fail (tests).
"""
