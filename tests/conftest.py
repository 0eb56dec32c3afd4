"""Shared fixtures. Integration tests need the real stack (`make up`); when a server is missing
they fail with the setting that names it — they never skip."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from config.settings import Settings, check_all_reachable, load_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    """The running stack; a missing server fails the test with the setting's name. At the end of
    the session, the changelog topics and groups of the `test-*` groups the session created are
    deleted, so the local broker does not gain ~25 topics of 8 partitions at every `make test`."""
    from confluent_kafka.admin import AdminClient

    from stack.servers import changelog_group, drop_groups

    check_all_reachable(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    before = set(admin.list_topics(timeout=10).topics)
    yield settings
    try:
        created = set(admin.list_topics(timeout=10).topics) - before
        groups = sorted({g for g in map(changelog_group, created) if g is not None and g.startswith("test-")})
        drop_groups(settings.kafka.bootstrap_servers, groups)
    except Exception as exc:  # noqa: BLE001 - housekeeping after the tests ran: never a test failure
        warnings.warn(f"could not delete the session's test groups and changelog topics: {exc}", stacklevel=1)
