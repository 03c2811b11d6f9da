"""THE HTTP layer: one resolver factory, one response helper, one error mapping.

Every error leaves as ``{"error": <message>, "type": <code>}`` with the status of its
``SipremsError`` class; request validation errors are 422 (400 for a body that is not JSON).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import (
    APIGatewayRestResolver,
    CORSConfig,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from siprems.auth import Principal
from siprems.errors import ForbiddenError, SipremsError, UnauthorizedError
from siprems.observability import logger

# Tokens travel in the Authorization header, never in cookies: any origin may call the API.
CORS = CORSConfig(allow_origin="*", allow_headers=["Authorization", "Content-Type"], max_age=300)
# What curl -d sends without a Content-Type; Powertools would parse it as a form.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def error_body(message: str, code: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message, "type": code}
    if details:
        body["details"] = details
    return body


def error_response(exc: SipremsError) -> Response:
    return json_response(
        exc.http_status, error_body(exc.public_message, exc.code, exc.details or None)
    )


class JsonApiResolver(APIGatewayRestResolver):
    """Powertools' REST resolver for a JSON-only API. Media types are case-insensitive
    (RFC 9110) but Powertools compares the Content-Type as written ("APPLICATION/JSON" was a
    415): the media type is lower-cased before it looks."""

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        for headers in (event.get("headers"), event.get("multiValueHeaders")):
            for name, value in (headers or {}).items():
                if name.lower() == "content-type":
                    headers[name] = _lower_media_type(value)
        return super().resolve(event, context)


def _lower_media_type(value: Any) -> Any:
    if isinstance(value, list):
        return [_lower_media_type(v) for v in value]
    if not isinstance(value, str):
        return value
    media, _, parameters = value.partition(";")
    return media.strip().lower() + (";" + parameters if parameters else "")


def _form(app: APIGatewayRestResolver) -> bool:
    content_type = app.current_event.headers.get("content-type") or ""
    return content_type.startswith(FORM_CONTENT_TYPE)


def new_resolver() -> APIGatewayRestResolver:
    app = JsonApiResolver(enable_validation=True, cors=CORS)

    @app.exception_handler(SipremsError)
    def _siprems_error(exc: SipremsError) -> Response:
        if exc.http_status >= 500:
            logger.exception("request failed", extra={"error_type": exc.code})
        else:
            logger.info("request refused", extra={"error_type": exc.code, "error": exc.message})
        return error_response(exc)

    @app.exception_handler(UnicodeDecodeError)
    def _not_text(_: UnicodeDecodeError) -> Response:
        # A binary body reaches the function base64-encoded; decoding it as JSON text fails.
        return json_response(
            400, error_body("request body is not valid JSON (not UTF-8 text)", "invalid_json")
        )

    not_json = error_body(
        "request bodies are JSON: send Content-Type application/json", "unsupported_media_type"
    )

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported(_: RequestUnsupportedContentType) -> Response:
        return json_response(415, not_json)

    @app.exception_handler(ValueError)
    def _unparsable(exc: ValueError) -> Response:
        # Powertools parses a multipart body itself and raises ValueError on a broken one
        # (no boundary); any other ValueError is a fault of the service.
        content_type = app.current_event.headers.get("content-type") or ""
        if not content_type.lower().startswith("multipart/"):
            raise exc
        return json_response(415, not_json)

    def _json_only(app: APIGatewayRestResolver, next_middleware: Any) -> Response:
        # a form body that validated as a request (validation runs before this)
        if _form(app) and app.current_event.body:
            return json_response(415, not_json)
        return next_middleware(app)

    app.use(middlewares=[_json_only])

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        if _form(app) and app.current_event.body:
            return json_response(415, not_json)  # "field required" would mislead
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return json_response(400, error_body("request body is not valid JSON", "invalid_json"))
        details = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in errors
        ]
        message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details)
        return json_response(
            422, error_body(message or "invalid request", "invalid_input", details)
        )

    @app.not_found
    def _not_found(_: Exception) -> Response:
        return json_response(
            404,
            error_body(
                f"no route {app.current_event.http_method} {app.current_event.path}", "not_found"
            ),
        )

    return app


def principal(app: APIGatewayRestResolver, *, admin: bool = False) -> Principal:
    """The caller, from the Lambda authorizer's context. A request without it never
    reached an authorizer (a misconfigured gateway): refused, never trusted."""
    context = app.current_event.request_context.authorizer.get_context()
    caller = Principal.from_context(context)
    if caller is None:
        raise UnauthorizedError("no authorizer context on the request")
    if admin and not caller.is_admin:
        raise ForbiddenError("this route needs the admin role")
    return caller
