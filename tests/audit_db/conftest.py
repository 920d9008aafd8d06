"""Shared by the tests of a separate audit database (tests.settings_audit_db)."""

from collections.abc import Iterator

import pytest
from django.apps import apps
from django.contrib.contenttypes.models import ContentType


@pytest.fixture(autouse=True)
def own_content_types(transactional_db) -> Iterator[None]:
    """The audit database's content types of the test app get keys of their own, unlike
    the default database's: a key taken from the wrong database names another model."""
    audit = ContentType.objects.db_manager("audit")
    audit.filter(app_label="testapp").delete()
    ContentType.objects.clear_cache()
    for model in apps.get_app_config("testapp").get_models():
        audit.get_for_model(model)
    yield
    ContentType.objects.clear_cache()
