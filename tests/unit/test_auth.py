"""Access tokens and the Lambda REQUEST authorizer, driven by events/authorizer/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import jwt
import pytest
from siprems.auth import Principal, bearer_token, mint_token, verify_access_token
from siprems.errors import UnauthorizedError

from scripts.gen_events import SAMPLE_SIGNING_KEY
from tests.fixtures.app import invoke, load_event

KEY = "a-test-signing-key-of-at-least-32-bytes!"


def test_mint_and_verify_round_trip_with_the_original_claims():
    token = mint_token(KEY, user_id=7, email="a@example.com", role="admin")
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert {"user_id", "email", "type", "iat", "exp", "role"} <= set(claims)
    assert claims["type"] == "access"
    assert verify_access_token(token, KEY) == Principal("7", "a@example.com", "admin")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            lambda: mint_token(KEY, user_id=1, email="e", ttl=timedelta(seconds=-60)), id="expired"
        ),
        pytest.param(
            lambda: mint_token("another-key-another-key-another-key!", user_id=1, email="e"),
            id="bad-signature",
        ),
        pytest.param(
            lambda: mint_token(KEY, user_id=1, email="e", token_type="refresh"),  # noqa: S106
            id="refresh",
        ),
        pytest.param(
            lambda: jwt.encode(
                {"user_id": 1, "email": "e", "type": "access", "iat": 0, "exp": 4102444800},
                None,
                algorithm="none",
            ),
            id="alg-none",
        ),
        pytest.param(
            lambda: jwt.encode(
                {"user_id": 1, "email": "e", "type": "access", "exp": 4102444800},
                KEY,
                algorithm="HS256",
            ),
            id="no-iat",
        ),
        pytest.param(
            lambda: jwt.encode(
                {"user_id": 1, "email": "e", "type": "access", "iat": 0, "exp": 4102444800},
                KEY,
                algorithm="HS512",
            ),
            id="hs512",
        ),
        pytest.param(lambda: "garbage", id="malformed"),
    ],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(UnauthorizedError):
        verify_access_token(token(), KEY)


@pytest.mark.parametrize(("skew", "accepted"), [(10, True), (-10, True), (300, False)])
def test_a_login_service_clock_a_little_off_is_tolerated(skew, accepted):
    """Found in a review: PyJWT refuses an iat in the future, so a token minted by a login
    service whose clock ran a second ahead was refused while brand new. Its time claims hold
    within 30 s; a token from minutes ahead (or expired minutes ago) is still refused."""
    minted_at = datetime.now(UTC) + timedelta(seconds=skew)
    token = mint_token(KEY, user_id=1, email="e", now=minted_at, ttl=timedelta(seconds=5))
    if accepted:
        assert verify_access_token(token, KEY).user_id == "1"
    else:
        with pytest.raises(UnauthorizedError, match="not yet valid"):
            verify_access_token(token, KEY)


def test_bearer_header_parsing():
    assert bearer_token({"authorization": "Bearer abc"}) == "abc"
    for headers in (
        {},
        {"Authorization": "abc"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ):
        with pytest.raises(UnauthorizedError):
            bearer_token(headers)


# --- the authorizer function, with the sample events ---------------------------------------
@pytest.fixture
def authorizer_env(monkeypatch):
    from siprems.config import load_settings

    monkeypatch.setenv("JWT_SECRET_KEY", SAMPLE_SIGNING_KEY)
    monkeypatch.delenv("JWT_SECRET_PARAMETER", raising=False)
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


@pytest.mark.parametrize(
    "event",
    [
        "missing-token",
        "not-bearer",
        "expired-token",
        "bad-signature",
        "alg-none",
        "alg-rs256",
        "refresh-token",
        "malformed-token",
    ],
)
def test_authorizer_answers_unauthorized(authorizer_env, event):
    with pytest.raises(Exception, match="^Unauthorized$"):
        invoke("authorizer", load_event(f"authorizer/{event}.json"))


def statements(policy, effect):
    return [s for s in policy["policyDocument"]["Statement"] if s["Effect"] == effect]


def test_authorizer_allows_a_user_everywhere_but_the_admin_routes(authorizer_env):
    event = load_event("authorizer/user-on-admin-route.json")
    policy = invoke("authorizer", event)
    assert policy["principalId"] == "42"
    assert policy["context"] == {"user_id": "42", "email": "clerk@example.com", "role": "user"}
    api = "/".join(event["methodArn"].split("/")[:2])  # arn:...:apiId/stage
    [allow] = statements(policy, "Allow")
    assert allow["Resource"] == [f"{api}/*/*"]
    denied = {r for s in statements(policy, "Deny") for r in s["Resource"]}
    assert denied == {f"{api}/POST/api/tasks/training/all", f"{api}/*/api/admin/*"}
    assert event["methodArn"].startswith(f"{api}/GET/api/admin/")  # covered by the Deny


def test_authorizer_gives_an_admin_every_route(authorizer_env):
    policy = invoke("authorizer", load_event("authorizer/valid-admin.json"))
    assert policy["context"]["role"] == "admin"
    assert statements(policy, "Deny") == []
    assert policy["policyDocument"]["Statement"][0]["Resource"][0].endswith("/prod/*/*")


def test_signing_key_from_ssm_parameter(aws, monkeypatch):
    """On AWS the key is an SSM SecureString read through Powertools parameters (cached)."""
    from aws_lambda_powertools.utilities import parameters
    from siprems.config import load_settings
    from siprems.secrets import jwt_signing_key

    boto3.client("ssm").put_parameter(Name="/siprems/jwt-secret", Value=KEY, Type="SecureString")
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    monkeypatch.setenv("JWT_SECRET_PARAMETER", "/siprems/jwt-secret")
    load_settings.cache_clear()
    parameters.clear_caches()
    try:
        assert jwt_signing_key(load_settings()) == KEY
        token = mint_token(KEY, user_id=1, email="e", now=datetime.now(UTC))
        assert verify_access_token(token, jwt_signing_key(load_settings())).user_id == "1"
    finally:
        load_settings.cache_clear()
        parameters.clear_caches()


def test_missing_key_configuration_is_an_error_not_an_open_door(monkeypatch):
    from siprems.config import load_settings
    from siprems.secrets import SecretUnavailableError, jwt_signing_key

    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    monkeypatch.delenv("JWT_SECRET_PARAMETER", raising=False)
    load_settings.cache_clear()
    try:
        with pytest.raises(SecretUnavailableError):
            jwt_signing_key(load_settings())
    finally:
        load_settings.cache_clear()


@pytest.mark.parametrize("claims", [{"user_id": 0, "email": ""}, {"user_id": "", "email": "a@b"}])
def test_a_token_with_an_empty_identity_is_refused(claims):
    with pytest.raises(UnauthorizedError):
        verify_access_token(mint_token(SAMPLE_SIGNING_KEY, **claims), SAMPLE_SIGNING_KEY)
