"""``Operation.start()`` keeps who started the run: every step records that actor, and the
admin's run page shows it."""

import pytest
from django.urls import reverse

from auditq import audit_context
from auditq.delivery import broker, recording
from auditq.models import AuditEntry
from auditq.operations import executor
from tests.testapp import operations as ops
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada(django_user_model):
    return django_user_model.objects.create(username="ada")


def steps_entries(document: Document) -> list[AuditEntry]:
    return list(AuditEntry.objects.for_object(document).filter(action="update"))


def test_the_run_keeps_the_starting_actor_and_its_steps_record_it(ada):
    document = Document.objects.create(title="before")
    with audit_context(actor=ada):
        run = ops.retitling.start(document_id=document.pk)

    run.refresh_from_db()
    assert (run.status, run.actor_id, run.actor_repr) == ("succeeded", ada.pk, "ada")
    first, second = steps_entries(document)
    assert [e.changes["title"][1] for e in (first, second)] == ["first step", "second step"]
    assert {(e.actor_id, e.actor_repr) for e in (first, second)} == {(ada.pk, "ada")}
    assert first.context == {"via_operation": f"tests.retitling #{run.pk}"}


def test_steps_run_later_outside_any_context_still_record_the_starting_actor(
    ada, undelivered, monkeypatch
):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)  # the relay's job
    document = Document.objects.create(title="before")
    with audit_context(actor=ada, request_id="req-1"):
        run = ops.retitling.start(document_id=document.pk)

    assert executor.run(run.pk, "default") == "pending"  # here: no context at all
    assert executor.run(run.pk, "default") == "succeeded"

    recording.record_waiting()
    assert {(e.actor_id, e.actor_repr) for e in steps_entries(document)} == {(ada.pk, "ada")}


def test_a_run_started_by_nobody_has_no_actor():
    document = Document.objects.create(title="before")

    run = ops.retitling.start(document_id=document.pk)

    run.refresh_from_db()
    assert (run.actor_id, run.actor_repr) == (None, "")
    assert {e.actor_id for e in steps_entries(document)} == {None}


def test_the_run_page_and_list_show_who_started_it(admin_client, ada):
    document = Document.objects.create(title="before")
    with audit_context(actor=ada):
        run = ops.retitling.start(document_id=document.pk)

    page = admin_client.get(reverse("admin:auditq_operationrun_change", args=[run.pk]))
    listing = admin_client.get(reverse("admin:auditq_operationrun_changelist"))

    assert "started by" in page.content.decode().lower()
    assert f"ada (#{ada.pk})" in page.content.decode()
    assert f"ada (#{ada.pk})" in listing.content.decode()
