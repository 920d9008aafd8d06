"""Every management command runs in an audit context: ``--audit-actor``, ``AUDITQ_ACTOR``
and ``context["command"]``, from ``call_command`` and from the command line."""

import pytest
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.db.models import QuerySet

from auditq import audit_context
from auditq.models import AuditEntry
from tests.helpers import manage
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada(django_user_model):
    return django_user_model.objects.create(username="ada")


@pytest.fixture
def document():
    return Document.objects.create(title="before")


def last(document: Document) -> AuditEntry:
    entry = AuditEntry.objects.for_object(document).last()
    assert entry.changes["title"][0] == "before", entry.changes
    return entry


def test_audit_actor_names_the_actor_and_the_command_is_recorded(ada, document):
    call_command("retitle", document.pk, "after", audit_actor="ada")

    entry = last(document)
    assert (entry.actor_id, entry.actor_repr) == (ada.pk, "ada")
    assert entry.context == {"command": "retitle"}


def test_the_environment_variable_names_the_actor_and_the_option_wins(
    ada, django_user_model, document, monkeypatch
):
    grace = django_user_model.objects.create(username="grace")
    monkeypatch.setenv("AUDITQ_ACTOR", "ada")
    call_command("retitle", document.pk, "by env")
    assert last(document).actor_id == ada.pk

    call_command("retitle", document.pk, "by option", audit_actor="grace")
    assert AuditEntry.objects.for_object(document).last().actor_id == grace.pk


def test_without_an_actor_the_command_is_recorded_and_an_outer_context_kept(ada, document):
    call_command("retitle", document.pk, "after")
    assert (last(document).actor_id, last(document).context) == (None, {"command": "retitle"})

    with audit_context(actor=ada, request_id="req-1", reason="ops"):
        call_command("retitle", document.pk, "again")
    entry = AuditEntry.objects.for_object(document).last()
    assert (entry.actor_id, entry.request_id) == (ada.pk, "req-1")
    assert entry.context == {"reason": "ops", "command": "retitle"}


def test_an_unknown_user_is_a_command_error_naming_it_and_nothing_runs(document, monkeypatch):
    with pytest.raises(CommandError, match="no user with username 'nobody'"):
        call_command("retitle", document.pk, "after", audit_actor="nobody")
    monkeypatch.setenv("AUDITQ_ACTOR", "ghost")
    with pytest.raises(CommandError, match="no user with username 'ghost'"):
        call_command("retitle", document.pk, "after")

    document.refresh_from_db()
    assert document.title == "before"


def test_djangos_own_commands_take_the_option_but_servers_and_the_test_runner_do_not():
    def options(name: str) -> set[str]:
        command = load_command_class(get_commands()[name], name)
        parser = command.create_parser("manage.py", name)
        return {option for action in parser._actions for option in action.option_strings}

    assert "--audit-actor" in options("check")
    assert "--audit-actor" in options("createsuperuser")
    assert "--audit-actor" in options("auditq_relay")
    assert "--audit-actor" not in options("runserver")
    assert "--audit-actor" not in options("test")


def test_a_command_run_as_a_process_with_audit_actor_records_the_actor(ada, document):
    done = manage("retitle", str(document.pk), "after", "--audit-actor", "ada", test_database=True)

    assert done.returncode == 0, done.stderr
    entry = last(document)
    assert (entry.actor_id, entry.actor_repr) == (ada.pk, "ada")
    assert entry.context == {"command": "retitle"}


def test_a_command_run_as_a_process_with_auditq_actor_records_the_actor(ada, document):
    done = manage("retitle", str(document.pk), "after", test_database=True, AUDITQ_ACTOR="ada")

    assert done.returncode == 0, done.stderr
    assert (last(document).actor_id, last(document).context) == (ada.pk, {"command": "retitle"})


def test_an_unknown_user_on_the_command_line_is_one_line_without_traceback(document):
    done = manage(
        "retitle", str(document.pk), "after", "--audit-actor", "nobody", test_database=True
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "CommandError: --audit-actor / AUDITQ_ACTOR: no user with username 'nobody'; "
        "the command did not run."
    )
    document.refresh_from_db()
    assert document.title == "before"


class Quiet(BaseCommand):
    """A command that opts out, as a project's own server would."""

    auditq_context = False

    def handle(self, *args, **options):
        Document.objects.create(title="quiet")


def test_a_command_that_opts_out_has_no_option_and_no_context():
    call_command(Quiet())

    assert AuditEntry.objects.get(object_repr="quiet").context == {}
    with pytest.raises(TypeError, match="Unknown option"):
        call_command(Quiet(), audit_actor="ada")


def test_users_that_cannot_be_read_are_a_command_error(document, monkeypatch):
    def broken(*args, **kwargs):
        raise DatabaseError('relation "auth_user" does not exist')

    monkeypatch.setattr(QuerySet, "first", broken)
    with pytest.raises(CommandError, match=r"the users cannot be read to find 'ada' \(relation"):
        call_command("retitle", document.pk, "after", audit_actor="ada")
