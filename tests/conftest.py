"""Shared fixtures. Integration tests need the real stack (`make up`); when a server is missing
they fail with the setting that names it — they never skip."""

from __future__ import annotations

import pytest

from config.settings import Settings, check_all_reachable, load_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The running stack; a missing server fails the test with the setting's name."""
    check_all_reachable(settings)
    return settings
