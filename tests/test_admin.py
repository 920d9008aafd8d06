"""The admin: the read-only trail, its diff page, trail links, and the dashboard."""

import datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from auditq import admin as auditq_admin
from auditq.models import AuditEntry, Outbox
from tests.celery_app import app as celery_app
from tests.helpers import entry
from tests.testapp.models import Account, Chosen, Document, Tag

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:auditq_auditentry_changelist"


@pytest.fixture
def superuser(django_user_model) -> User:
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def staff(client, django_user_model):
    """Sign in a staff user with the given permissions (codenames of auditq or testapp)."""

    def sign_in(*codenames: str) -> User:
        user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
        client.force_login(user)
        return user

    return sign_in


def test_changelist_lists_entries_with_links_and_changed_fields(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="Report")
    entry(document, changes={"title": ["a", "b"], "status": ["draft", "live"]}, actor=superuser)
    deleted = entry(Document(pk=999), action="delete", object_repr="Gone")

    response = client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    html = response.content.decode()
    assert reverse("admin:testapp_document_change", args=[document.pk]) in html
    assert "title, status" in html
    assert "root" in html
    # A deleted object has no change page to link to.
    assert reverse("admin:testapp_document_change", args=[deleted.object_pk]) not in html
    assert "Gone" in html


def test_changelist_filters_and_search(client, superuser):
    client.force_login(superuser)
    first, second = Document.objects.create(title="first"), Document.objects.create(title="second")
    account = Account.objects.create(name="acme")
    entry(first, actor=superuser)
    entry(second, action="create")
    entry(account)
    document_type = ContentType.objects.get_for_model(Document)
    url = reverse(CHANGELIST)

    def listed(**params) -> set[str]:
        response = client.get(url, params)
        assert response.status_code == 200, response
        return {e.object_repr for e in response.context["cl"].result_list}

    assert listed() == {"first", "second", "acme"}
    assert listed(action__exact="create") == {"second"}
    assert listed(content_type__id__exact=document_type.pk) == {"first", "second"}
    assert listed(content_type__id__exact=document_type.pk, object_pk=second.pk) == {"second"}
    assert listed(actor=superuser.pk) == {"first"}
    assert listed(actor="none") == {"second", "acme"}
    assert listed(q=str(first.pk)) == {"first"} | ({"acme"} if account.pk == first.pk else set())
    assert listed(q="sec") == {"second"}
    assert listed(q="root") == {"first"}

    html = client.get(url).content.decode()
    assert "Testapp | document" in html  # the model filter offers audited models
    assert f"?actor={superuser.pk}" in html  # the actor filter offers recent actors


def test_actor_filter_offers_only_recent_actors_and_is_bounded(client, superuser, monkeypatch):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    start = timezone.now()
    for i in range(4):
        user = User.objects.create_user(f"user{i}")
        entry(document, actor=user, at=start + datetime.timedelta(seconds=i))
    User.objects.create_user("never-acted")
    monkeypatch.setattr(auditq_admin.ActorFilter, "CHOICES", 2)

    response = client.get(reverse(CHANGELIST))

    (spec,) = [
        f for f in response.context["cl"].filter_specs if isinstance(f, auditq_admin.ActorFilter)
    ]
    assert [label for _, label in spec.lookup_choices] == ["user3", "user2", "no actor (system)"]


def test_bad_filter_values_do_not_crash(client, superuser):
    client.force_login(superuser)

    for params in ({"actor": "x"}, {"content_type__id__exact": "x"}):
        response = client.get(reverse(CHANGELIST), params)
        assert response.status_code in (200, 302)


def test_changelist_never_counts_the_whole_table(client, superuser, django_assert_max_num_queries):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    for _ in range(3):
        entry(document)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(auditq_admin.CappedCountPaginator, "CAP", 2)
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            response = client.get(reverse(CHANGELIST), {"action__exact": "update"})

    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts
    assert "more than 2 audit entries" in " ".join(response.content.decode().split())


def test_detail_page_shows_a_readable_diff(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    old_body = "\n".join(f"line {i}" for i in range(10))
    new_body = old_body.replace("line 5", "line five")
    changed = entry(
        document,
        changes={
            "title": ["draft title", "final title"],
            "body": [old_body, new_body],
            "data": [None, {"b": 1, "a": [1, 2]}],
            "pin": ["***", "***"],
            "tags": {"added": [3, 4], "removed": [1]},
        },
        context={"reason": "import"},
    )

    response = client.get(reverse("admin:auditq_auditentry_change", args=[changed.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "draft title" in html and "final title" in html
    assert '<span class="auditq-del">-line 5</span>' in html
    assert '<span class="auditq-add">+line five</span>' in html
    assert "{\n  &quot;a&quot;: [\n    1,\n    2\n  ],\n  &quot;b&quot;: 1\n}" in html
    assert "*** masked" in html
    assert "removed: 1" in html and "added: 3, 4" in html
    assert "&quot;reason&quot;: &quot;import&quot;" in html
    trail = reverse(CHANGELIST) + f"?content_type__id__exact={changed.content_type_id}"
    assert trail.replace("&", "&amp;") in html


def test_diff_rows():
    changes = {
        "a": [None, "x"],
        "b": ["short", "also short"],
        "c": ["x" * 100, "y" * 100],
        "d": ["***", "***"],
        "e": [1, True],
        "f": {"added": [], "removed": [2]},
    }
    rows = {row.field: row for row in auditq_admin.diff_rows(AuditEntry(changes=changes))}

    assert rows["a"].kind == "value" and rows["a"].old.text is None
    assert rows["b"].kind == "value"
    assert rows["c"].kind == "lines"
    assert [tag for tag, _ in rows["c"].lines] == ["hunk", "del", "add"]
    assert rows["d"].old.masked and rows["d"].new.masked
    assert (rows["e"].old.text, rows["e"].new.text) == ("1", "true")
    assert (rows["f"].old.text, rows["f"].new.text) == ("2", None)


def test_user_controlled_text_is_escaped(client, superuser):
    client.force_login(superuser)
    script = "<script>alert(1)</script>"
    document = Document.objects.create(title="doc")
    evil = entry(
        document,
        object_repr=script,
        changes={"title": [script, script + "!"], "body": ["a\n" + script, "b\n" + script]},
        context={"note": script},
        actor_repr=script,
    )

    for url in (
        reverse(CHANGELIST),
        reverse("admin:auditq_auditentry_change", args=[evil.pk]),
    ):
        html = client.get(url).content.decode()
        assert script not in html, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url


def test_entries_are_read_only_even_for_superusers(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    existing = entry(document)

    assert client.get(reverse("admin:auditq_auditentry_add")).status_code == 403
    change = reverse("admin:auditq_auditentry_change", args=[existing.pk])
    response = client.post(change, {"action": "delete", "object_repr": "tampered"})
    assert response.status_code == 403
    delete = reverse("admin:auditq_auditentry_delete", args=[existing.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    bulk = client.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [existing.pk]}
    )
    assert bulk.status_code in (200, 302)
    existing.refresh_from_db()
    assert existing.object_repr == "doc"
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert reverse("admin:auditq_auditentry_add") not in html


def test_trail_link_on_audited_change_pages_only(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    tag = Tag.objects.create(name="tag")

    html = client.get(reverse("admin:testapp_document_change", args=[document.pk])).content
    content_type = ContentType.objects.get_for_model(Document)
    trail = f"{reverse(CHANGELIST)}?content_type__id__exact={content_type.pk}&amp;object_pk="
    assert f'href="{trail}{document.pk}"'.encode() in html
    assert b'class="auditq-trail-link"' in html
    assert b">History</a>" in html  # Django's own log stays, labelled apart

    html = client.get(reverse("admin:testapp_tag_change", args=[tag.pk])).content
    assert b"auditq-trail-link" not in html


def test_trail_link_needs_view_permission(client, staff):
    staff("view_document", "change_document")
    document = Document.objects.create(title="doc")

    html = client.get(reverse("admin:testapp_document_change", args=[document.pk])).content

    assert b"auditq-trail-link" not in html


def test_mixin_links_whatever_the_app_order_and_only_once(client, superuser, settings):
    client.force_login(superuser)
    chosen = Chosen.objects.create(name="c")
    url = reverse("admin:testapp_chosen_change", args=[chosen.pk])

    assert client.get(url).content.count(b'class="auditq-trail-link"') == 1
    settings.INSTALLED_APPS = [*(a for a in settings.INSTALLED_APPS if a != "auditq"), "auditq"]
    assert client.get(url).content.count(b'class="auditq-trail-link"') == 1


def test_mixin_can_send_history_to_the_trail(client, superuser):
    client.force_login(superuser)
    chosen = Chosen.objects.create(name="c")

    response = client.get(reverse("admin:testapp_chosen_history", args=[chosen.pk]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse(CHANGELIST) + "?content_type__id__exact=")


def test_dashboard_is_linked_from_the_admin(client, superuser):
    client.force_login(superuser)
    dashboard = reverse("admin:auditq_dashboard")

    for page in (reverse("admin:index"), reverse("admin:app_list", args=["auditq"])):
        assert dashboard in client.get(page).content.decode(), page
    assert dashboard in client.get(reverse(CHANGELIST)).content.decode()


def test_dashboard_permissions(client, staff, django_user_model):
    url = reverse("admin:auditq_dashboard")

    assert client.get(url).status_code == 302  # anonymous: the admin login
    user = django_user_model.objects.create_user("plain", password="pw")
    client.force_login(user)
    assert client.get(url).status_code == 403  # signed in, not staff
    client.logout()
    staff()
    assert client.get(url).status_code == 403  # staff without view permission
    User.objects.get(username="staff").user_permissions.add(
        Permission.objects.get(codename="view_auditentry")
    )
    assert client.get(url).status_code == 200


def test_dashboard_shows_backlog_throughput_and_task_links(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    now = timezone.now()
    for minutes_ago in (0, 0, 5, 60 * 23):
        entry(document, at=now - datetime.timedelta(minutes=minutes_ago))
    entry(document, at=now - datetime.timedelta(days=2))
    Outbox.objects.create(payload="{}", created_at=now - datetime.timedelta(minutes=3))

    response = client.get(reverse("admin:auditq_dashboard"))

    assert response.status_code == 200
    throughput = response.context["throughput"]
    assert (throughput.total, throughput.peak, len(throughput.bars)) == (4, 2, 3)
    assert response.context["backlog"].rows == 1
    html = response.content.decode()
    assert html.count("<rect ") == 3
    assert "oldest 3 min" in html
    results = reverse("admin:django_celery_results_taskresult_changelist")
    assert f"{results}?status__exact=FAILURE" in html
    assert response.context["queue"].status == "n/a"  # the tests' broker is memory://


def test_dashboard_survives_a_broker_that_is_down(client, superuser, monkeypatch):
    client.force_login(superuser)
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")

    response = client.get(reverse("admin:auditq_dashboard"))

    assert response.status_code == 200
    assert response.context["queue"].status == "unreachable"
    assert "unreachable" in response.content.decode()


def test_dashboard_reads_the_redis_queue_depth(client, superuser, redis_server, monkeypatch):
    client.force_login(superuser)
    redis_server.client().flushall()
    redis_server.client().lpush("auditq-tests", "a", "b")
    monkeypatch.setattr(celery_app.conf, "broker_url", redis_server.url)

    queue = client.get(reverse("admin:auditq_dashboard")).context["queue"]

    assert (queue.queue, queue.messages, queue.status) == ("auditq-tests", 2, "ok")
    redis_server.client().flushall()
    assert client.get(reverse("admin:auditq_dashboard")).context["queue"].messages == 0


@pytest.mark.django_db(transaction=True)
def test_a_real_change_reaches_the_admin(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="before")
    document.title = "after"
    document.save()

    trail = client.get(reverse("admin:testapp_document_change", args=[document.pk])).context
    response = client.get(reverse(CHANGELIST), {"object_pk": document.pk})

    assert trail["original"] == document
    assert [e.action for e in response.context["cl"].result_list] == ["update", "create"]
    update = response.context["cl"].result_list[0]
    html = client.get(reverse("admin:auditq_auditentry_change", args=[update.pk])).content
    assert b"before" in html and b"after" in html


def test_model_filter_keeps_a_model_that_is_no_longer_audited(client, superuser):
    client.force_login(superuser)
    tag = Tag.objects.create(name="once audited")
    entry(tag, changes={"name": ["a", "b"]})
    tag_type = ContentType.objects.get_for_model(Tag)

    response = client.get(reverse(CHANGELIST), {"content_type__id__exact": tag_type.pk})

    assert [e.object_repr for e in response.context["cl"].result_list] == ["once audited"]
    (spec,) = [
        f for f in response.context["cl"].filter_specs if isinstance(f, auditq_admin.ModelFilter)
    ]
    assert (str(tag_type.pk), "Testapp | tag") in spec.lookup_choices


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.25, "250 ms"), (12.5, "12.5 s"), (250, "4 min 10 s"), (11100, "3 h 5 min")],
)
def test_durations_read_like_a_person_would_say_them(seconds, shown):
    from auditq.templatetags.auditq_admin import auditq_duration

    assert auditq_duration(datetime.timedelta(seconds=seconds)) == shown
    assert auditq_duration(None) == "-"
    assert auditq_duration(datetime.timedelta(days=3, hours=2)) == "3 days 2 h"


def test_date_hierarchy_years_come_from_the_index_not_a_scan(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    for year in (2019, 2021, 2021):
        entry(document, at=datetime.datetime(year, 6, 1, tzinfo=datetime.UTC))

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(CHANGELIST))

    page = response.content.decode()
    assert "occurred_at__year=2019" in page
    assert "occurred_at__year=2021" in page
    assert "occurred_at__year=2020" not in page  # a year without entries is not offered
    assert not [q for q in queries if "DISTINCT" in q["sql"].upper()]
