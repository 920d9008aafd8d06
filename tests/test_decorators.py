"""``@audited`` rejects what it cannot honour, at import time, with a clear message."""

import pytest
from django.db import models

from auditq import audited, registry
from tests.testapp.models import Account, Document


def test_bare_and_called_forms_return_the_class_unchanged():
    assert registry.is_audited(Document)
    assert registry.audited_models()[Account] == registry.AuditOptions(
        fields=None, exclude=("updated_at",), mask=("pin",)
    )


def test_fields_and_exclude_together_are_refused():
    with pytest.raises(TypeError, match="fields= or exclude=, not both"):
        audited(fields=["a"], exclude=["b"])


def test_a_string_instead_of_a_list_is_refused():
    with pytest.raises(TypeError, match=r"mask=\.\.\.\) takes a list of field names"):
        audited(mask="card_token")


@pytest.mark.parametrize("target", [object, len])
def test_only_models_can_be_audited(target):
    with pytest.raises(TypeError, match="decorates model classes"):
        audited(target)


def test_abstract_models_cannot_be_audited():
    class Base(models.Model):
        class Meta:
            abstract = True
            app_label = "testapp"

    with pytest.raises(TypeError, match="abstract model Base"):
        audited(Base)


def test_auditq_missing_from_installed_apps_fails_at_import(monkeypatch):
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured
    from django.test.utils import isolate_apps

    monkeypatch.setattr(apps, "is_installed", lambda label: label != "auditq")
    with isolate_apps("tests.testapp"):

        class Orphan(models.Model):  # noqa: DJ008
            class Meta:
                app_label = "testapp"

        with pytest.raises(ImproperlyConfigured) as raised:
            audited(Orphan)

    # The message states the rule: auditq is required; django_celery_results is only
    # recommended (the warning auditq.W002), so the error does not claim it is needed.
    assert str(raised.value) == (
        "@audited on testapp.Orphan needs 'auditq' in INSTALLED_APPS: without it nothing "
        "records the model's changes."
    )
