"""Settings from the environment (siprems.config)."""

from __future__ import annotations

import pytest
from siprems.config import load_settings
from siprems.errors import ConfigurationError


def test_a_setting_that_is_not_a_number_names_the_variable(monkeypatch):
    """Not int()'s "invalid literal" on every invocation, but which variable, and a 500."""
    monkeypatch.setenv("WORKER_TIMEOUT_SECONDS", "2 minutes")
    load_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="WORKER_TIMEOUT_SECONDS") as raised:
            load_settings()
        assert raised.value.http_status == 500 and "'2 minutes'" in raised.value.message
        monkeypatch.setenv("WORKER_TIMEOUT_SECONDS", "90")
        monkeypatch.setenv("SYNC_WAIT_SECONDS", "2.5")
        load_settings.cache_clear()
        settings = load_settings()
        assert (settings.worker_timeout_seconds, settings.sync_wait_seconds) == (90, 2.5)
    finally:
        load_settings.cache_clear()
