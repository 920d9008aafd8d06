"""Cause and effect: a handler's change names the change that caused it
(``context["caused_by"]``), and the admin links the two entries both ways."""

import pytest
from django.urls import reverse

from auditq import audit_context
from auditq.models import AuditEntry
from tests.helpers import entry
from tests.testapp import handlers
from tests.testapp.models import Account, Chosen, Ticket

pytestmark = pytest.mark.django_db(transaction=True)


def name(func) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def page(client, found: AuditEntry) -> str:
    response = client.get(reverse("admin:auditq_auditentry_change", args=[found.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_handlers_change_records_the_change_that_caused_it(django_user_model):
    ada = django_user_model.objects.create(username="ada")
    with audit_context(actor=ada, request_id="req-1"):
        chosen = Chosen.objects.create(name="cascade 1")

    cause = AuditEntry.objects.for_object(chosen).get()
    effect = AuditEntry.objects.get(object_repr="account of cascade 1")
    assert effect.context == {
        "via_callback": name(handlers.cascade),
        "caused_by": str(cause.event_id),
    }
    assert (effect.actor_id, effect.request_id) == (ada.pk, "req-1")


def test_the_entry_pages_link_the_cause_and_its_effects(admin_client):
    chosen = Chosen.objects.create(name="cascade 2")
    cause = AuditEntry.objects.for_object(chosen).get()
    effect = AuditEntry.objects.get(object_repr="account of cascade 2")
    unrelated = entry(Account.objects.create(name="plain"))

    effect_url = reverse("admin:auditq_auditentry_change", args=[effect.pk])
    cause_url = reverse("admin:auditq_auditentry_change", args=[cause.pk])
    effect_page, cause_page = page(admin_client, effect), page(admin_client, cause)
    assert "Made by a handler of" in effect_page
    assert f'<a href="{cause_url}">Chosen #{chosen.pk} created' in effect_page
    assert "Its handlers made" in cause_page
    assert f'<a href="{effect_url}">Account #' in cause_page
    assert "Cause and effect" not in page(admin_client, unrelated)


def test_a_cause_that_has_no_entry_is_named_without_a_link(admin_client):
    ticket = Ticket.objects.create(subject="urgent", state="escalated")  # not audited

    effect = AuditEntry.objects.get(object_repr=f"escalation of {ticket.subject}")
    html = page(admin_client, effect)
    assert f"Made by a handler of: change {effect.context['caused_by']} (not in the trail" in html


def test_the_cause_lists_every_effect(admin_client):
    chosen = Chosen.objects.create(name="cascade 3")
    cause = AuditEntry.objects.for_object(chosen).get()
    for index in range(3):
        entry(Account(pk=1000 + index), context={"caused_by": str(cause.event_id)})

    html = page(admin_client, cause)

    listed = html[html.index('<ul class="auditq-effects">') :].split("</ul>")[0]
    assert listed.count("<li>") == 4  # the handler's own entry and the three written here
