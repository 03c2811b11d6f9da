"""DynamoDB served by moto inside LocalStack.

The default provider runs DynamoDB Local, which LocalStack downloads (with a JDK) on first use;
offline that fails. moto's DynamoDB backend (already part of LocalStack, as ``moto-ext``) answers
every operation instead: tables, conditions, GSIs, transactions, TTL settings (items are not
expired), streams configuration.
"""

from typing import Any

from localstack.aws.api.dynamodb import DynamodbApi
from localstack.services.plugins import Service, ServiceLifecycleHook, aws_provider


class MotoDynamoDBProvider(DynamodbApi, ServiceLifecycleHook):
    """Implements nothing itself: every operation falls through to moto."""


@aws_provider(api="dynamodb", name="moto")
def dynamodb_moto():
    from localstack.services.moto import MotoFallbackDispatcher

    install_fast_transactions()
    return Service.for_provider(
        MotoDynamoDBProvider(), dispatch_table_factory=MotoFallbackDispatcher
    )


def _transact_write_items(self, transact_items: list[dict[str, Any]]) -> None:
    """moto's TransactWriteItems, without its deep copy of every table a transaction names
    (once per item: for rollback). A train-all child's completion is a transaction, so with
    the copy each one cost time in proportion to the jobs table (1,000 children: LocalStack
    spent 85 % of its CPU copying). Same semantics: conditions are checked against the state
    before the transaction, nothing is written if any fails (TransactionCanceledException with
    a reason per item), and only the items written are kept aside to undo a failed write."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    operations, seen, errors = [], set(), []
    for entry in transact_items:  # 1. check every condition, write nothing
        if len(entry) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(entry.items()))
        old_item = None
        try:
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            if op_type == "Put":
                table = self.get_table(table_name)
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            if (table_name, str(key)) in seen:
                raise MultipleTransactionsException()
            seen.add((table_name, str(key)))
            current = self.get_item(table_name, key)
            condition = op.get("ConditionExpression")
            if condition is not None and not get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            ).expr(current):
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    old_item = current.to_json()["Attributes"]
                raise ConditionalCheckFailed(item=old_item)
            operations.append((op_type, op, table_name, key, current))
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            raise
        except ConditionalCheckFailed as failed:
            errors.append(("ConditionalCheckFailed", str(failed.message), old_item))
        except Exception as exc:  # noqa: BLE001 - moto reports any other error per item too
            errors.append((type(exc).__name__, str(exc), None))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)

    undo = []
    try:  # 2. write (the conditions again, as moto does: they hold, nothing came between)
        for op_type, op, table_name, key, current in operations:
            if op_type == "ConditionCheck":
                continue
            expression = {
                "condition_expression": op.get("ConditionExpression"),
                "expression_attribute_names": op.get("ExpressionAttributeNames"),
                "expression_attribute_values": op.get("ExpressionAttributeValues"),
            }
            undo.append(
                (table_name, key, None if current is None else current.to_json()["Attributes"])
            )
            if op_type == "Put":
                self.put_item(table_name, op["Item"], **expression)
            elif op_type == "Delete":
                self.delete_item(table_name, key, **expression)
            else:
                self.update_item(
                    table_name, key, update_expression=op["UpdateExpression"], **expression
                )
    except Exception:
        for table_name, key, before in reversed(undo):
            if before is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before)
        raise


def install_fast_transactions() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    DynamoDBBackend.transact_write_items = _transact_write_items
