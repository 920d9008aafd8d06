"""A handler module that nothing imports: auditq's autodiscovery must find it."""

import os

from auditq import after_save
from tests.discoveredapp.models import Note
from tests.testapp.models import Effect


@after_save(Note)
def note_saved(note, event):
    Effect.objects.create(
        handler="note saved", object_pk=str(note.pk), event_id=event.id, pid=os.getpid()
    )
