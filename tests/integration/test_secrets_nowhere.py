"""Masked values appear nowhere in clear on the real stack: in no table but the model's
own, in no message any process published, in no log line of the worker or of the web
process, even when a handler fails quoting them."""

import logging

import pytest
from django.apps import apps
from django.db import connection
from kombu import messaging

from auditq import audit_context
from auditq.models import CallbackRun
from tests.conftest import wait_for
from tests.integration.test_delivery import quiet
from tests.testapp.models import Account, Vault

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = [
    "pin-4711",
    "hunter2-pw",
    "tok-0xdeadbeef",
    "s3cr3t-client",
    "combo-31-7",
    "vault-x9",
    "sess-tok-5150",  # a context key named like a masked field
]


def tables_holding(text: str) -> list[str]:
    """Every table of the database (all apps), read with plain SQL, that holds ``text``."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            if text in repr(cursor.fetchall()):
                found.append(table)
    return found


def test_masked_values_are_in_no_table_message_or_log(workers, tmp_path, caplog, monkeypatch):
    published = tmp_path / "published"
    published.write_text("")
    worker = workers(AUDITQ_TEST_PUBLISH_LOG=str(published))
    publish = messaging.Producer.publish

    def logged(self, body, *args, **kwargs):  # this process's messages too
        with published.open("a") as log:
            log.write(f"{kwargs.get('headers')!r} {body!r}\n")
        return publish(self, body, *args, **kwargs)

    monkeypatch.setattr(messaging.Producer, "publish", logged)
    caplog.set_level(logging.DEBUG)

    with audit_context(session_token=SECRETS[6]):
        account = Account.objects.create(
            name="ada", pin=SECRETS[0], password=SECRETS[1], api_token=SECRETS[2]
        )
        account.client_secret = SECRETS[3]
        account.save()
    Vault.objects.create(label="strongroom", combination=SECRETS[4], secret=SECRETS[5])
    Vault.objects.create(label="leaky", combination=SECRETS[4], secret=SECRETS[5])

    wait_for(
        lambda: CallbackRun.objects.filter(status="failed").exists() and quiet(),
        60,
        "the leaky handler to fail for good and a quiet system",
    )
    own = {Account._meta.db_table, Vault._meta.db_table}
    effect = apps.get_model("testapp", "Effect")._meta.db_table  # a test handler's notes
    texts = {
        "messages": published.read_text(),
        "worker log": worker.log.read_text(),
        "web process log": caplog.text,
    }
    assert "auditq.tasks.run_callback" in texts["messages"]  # the capture saw messages
    assert "leaky" in texts["worker log"]  # and the failure was logged
    for secret in SECRETS:
        assert set(tables_holding(secret)) - own - {effect} == set(), secret
        for where, text in texts.items():
            assert secret not in text, (secret, where)
    run = CallbackRun.objects.get(status="failed")
    assert "cannot open leaky with" in run.last_error
