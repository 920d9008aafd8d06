"""Handler modules are found like the admin finds ``admin.py``: a ``handlers`` module
that no code imports still runs."""

import pytest

from tests.discoveredapp.models import Note
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_handlers_module_that_nothing_imports_runs():
    note = Note.objects.create(text="found")

    [effect] = Effect.objects.filter(handler="note saved")
    assert effect.object_pk == str(note.pk)
