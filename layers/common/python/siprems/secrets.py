"""Secrets fetched at run time, cached: never in code, the template or logs.

The JWT signing key is ``JWT_SECRET_KEY`` locally, else the SSM SecureString named by
``JWT_SECRET_PARAMETER`` (Powertools parameters; re-read after ``max_age`` so a rotated key
reaches warm functions). The database secret is read by ``siprems.sales.db``.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters

from siprems.config import Settings
from siprems.errors import SipremsError

SECRET_MAX_AGE = 300  # seconds


class SecretUnavailableError(SipremsError):
    code = "secret_unavailable"
    http_status = 500


def jwt_signing_key(settings: Settings) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.jwt_secret_parameter:
        try:
            value = parameters.get_parameter(
                settings.jwt_secret_parameter, decrypt=True, max_age=SECRET_MAX_AGE
            )
        except parameters.exceptions.GetParameterError as exc:
            raise SecretUnavailableError(
                f"cannot read the JWT signing key parameter {settings.jwt_secret_parameter!r}"
            ) from exc
        if value:
            return str(value)
    raise SecretUnavailableError(
        "no JWT signing key configured: set JWT_SECRET_KEY or JWT_SECRET_PARAMETER"
    )
