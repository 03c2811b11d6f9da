"""Lambda REQUEST authorizer of the REST API: verifies the access token (HS256).

No, malformed, expired, badly signed, ``alg: none`` or refresh tokens: "Unauthorized"
(API Gateway answers 401). A valid token gets a policy for the whole API, with the admin
routes denied unless its role is admin (API Gateway answers 403 there). The policy covers
every route because API Gateway caches it per token for all routes.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from siprems.auth import ADMIN_ROUTES, bearer_token, verify_access_token
from siprems.config import load_settings
from siprems.errors import UnauthorizedError
from siprems.observability import logger, tracer
from siprems.secrets import jwt_signing_key


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_source(data_class=APIGatewayAuthorizerRequestEvent)
def lambda_handler(
    event: APIGatewayAuthorizerRequestEvent, context: LambdaContext
) -> dict[str, Any]:
    try:
        caller = verify_access_token(bearer_token(event.headers), jwt_signing_key(load_settings()))
    except UnauthorizedError as exc:
        logger.info("token refused", extra={"reason": exc.message})
        raise Exception("Unauthorized") from None  # noqa: TRY002 - API Gateway's 401 contract
    policy = APIGatewayAuthorizerResponse.from_route_arn(
        event.method_arn, principal_id=caller.user_id, context=caller.context()
    )
    policy.allow_all_routes()
    if not caller.is_admin:
        for method, resource in ADMIN_ROUTES:
            policy.deny_route(method, resource)
    logger.info("token accepted", extra={"user_id": caller.user_id, "role": caller.role})
    return policy.asdict()
