"""The tests' ``@after_save`` / ``@after_delete`` handlers: each leaves an ``Effect``."""

import os

from auditq import after_delete, after_save
from auditq.models import CallbackRun
from tests.testapp.models import Account, Chosen, Effect, Ticket, Vault


def effect(handler: str, object_pk, event, **seen) -> None:
    Effect.objects.create(
        handler=handler, object_pk=str(object_pk), event_id=event.id, pid=os.getpid(), seen=seen
    )


@after_save(Ticket, when=lambda ticket: ticket.state == "closed", retries=0)
def ticket_closed(ticket, event):
    effect("closed", ticket.pk, event, state=ticket.state, changes=dict(event.changes))


@after_delete(Ticket)
def ticket_deleted(event):
    effect("deleted", event.pk, event, subject=event.changes["subject"][0])


@after_save(Ticket, when=lambda ticket: ticket.subject.startswith("flaky"), retries=3, backoff=0.05)
def flaky(ticket, event):
    """Fails on its first two attempts, then works."""
    done = CallbackRun.objects.get(handler=f"{__name__}.flaky", event_id=event.id).attempts
    Effect.objects.create(handler="flaky-try", object_pk=str(ticket.pk), event_id=event.id, pid=0)
    if done < 2:
        raise RuntimeError(f"flaky attempt {done + 1}")
    effect("flaky", ticket.pk, event)


@after_save(
    Account, when=lambda account: account.name.startswith("broken"), retries=1, backoff=0.05
)
def always_fails(account, event):
    raise ValueError(f"cannot handle {account.name}")


@after_save(Ticket, when=lambda ticket: ticket.state == "escalated")
def escalate(ticket, event):
    """Makes an audited change of its own, in the originating change's context."""
    effect("escalated", ticket.pk, event, actor=event.actor_id, request_id=event.request_id)
    Account.objects.create(name=f"escalation of {ticket.subject}")


@after_save(Vault, retries=0)
def vault_saved(vault, event):
    """Sees masked fields in clear (a real handler would use them, not store them)."""
    effect("vault saved", vault.pk, event, changes=dict(event.changes))


@after_save(Vault, when=lambda vault: vault.label.startswith("leaky"), retries=0)
def vault_leaks(vault, event):
    """Fails quoting masked values, as careless code does."""
    secret = event.changes["secret"][1]
    raise ValueError(f"cannot open {vault.label} with {vault.combination} or {secret}")


@after_delete(Vault, retries=0)
def vault_deleted(event):
    effect("vault deleted", event.pk, event, changes=dict(event.changes))


@after_save(Chosen, when=lambda chosen: chosen.name.startswith("cascade"))
def cascade(chosen, event):
    """An audited model's handler that makes an audited change: cause and effect."""
    Account.objects.create(name=f"account of {chosen.name}")
