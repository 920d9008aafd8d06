"""The admin: the read-only trail, its search, an entry's diff page, and trail links."""

import datetime
import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.template import Engine
from django.template.loaders.locmem import Loader
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from auditq.admin.filters import ActorFilter, ModelFilter
from auditq.admin.paginators import CappedCountPaginator
from auditq.models import AuditEntry
from tests.helpers import entry
from tests.testapp.models import Account, Chosen, Document, Everything, Status, Tag

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:auditq_auditentry_changelist"
CUSTOM_FORM = """{% extends "admin/change_form.html" %}
{% block form_top %}<p>custom form</p>{% endblock %}"""


def diff_table(html: str) -> str:
    start = html.index('<table class="auditq-diff')
    return html[start : html.index("</table>", start)]


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
    monkeypatch.setattr(ActorFilter, "CHOICES", 2)

    response = client.get(reverse(CHANGELIST))

    (spec,) = [f for f in response.context["cl"].filter_specs if isinstance(f, ActorFilter)]
    assert [label for _, label in spec.lookup_choices] == ["user3", "user2", "no actor (system)"]


@pytest.mark.parametrize(
    "params",
    [
        {"actor": "x"},
        {"content_type__id__exact": "x"},
        {"content_type__id__exact": "²"},  # isdigit() says yes, int() says no
        {"content_type__id__exact": "1" * 20},  # beyond the column: OverflowError on SQLite
        {"actor": "1" * 20},
        {"actor": "-" + "1" * 20},
    ],
)
def test_bad_filter_values_answer_like_djangos_own_filters(client, superuser, params):
    client.force_login(superuser)
    entry(Document.objects.create(title="listed"), actor=superuser)

    response = client.get(reverse(CHANGELIST), params)

    # The admin's answer to a bad lookup: back to the whole list, with its error flag.
    assert (response.status_code, response["Location"]) == (302, f"{reverse(CHANGELIST)}?e=1")
    shown = client.get(response["Location"])
    assert [e.object_repr for e in shown.context["cl"].result_list] == ["listed"]


def test_empty_filter_values_filter_nothing(client, superuser):
    client.force_login(superuser)
    entry(Document.objects.create(title="doc"), actor=superuser)

    for params in ({"actor": ""}, {"content_type__id__exact": ""}):
        response = client.get(reverse(CHANGELIST), params)
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 1


def test_changelist_never_counts_the_whole_table(client, superuser, django_assert_max_num_queries):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    for _ in range(3):
        entry(document)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CappedCountPaginator, "CAP", 2)
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
    assert "#1 (not found)" in html and "#3 (not found)" in html and "#4 (not found)" in html
    assert "&quot;reason&quot;: &quot;import&quot;" in html
    trail = reverse(CHANGELIST) + f"?content_type__id__exact={changed.content_type_id}"
    assert trail.replace("&", "&amp;") in html


def test_detail_page_names_objects_choices_and_fields_and_says_what_happened(client, superuser):
    client.force_login(superuser)
    report, red = Document.objects.create(title="Report"), Tag.objects.create(name="red")
    changed = entry(
        Everything(pk=7),
        changes={
            "owner": [None, report.pk],
            "twin": [red.pk, None],
            "status": [Status.DRAFT, Status.LIVE],
        },
        actor=superuser,
    )

    html = client.get(reverse("admin:auditq_auditentry_change", args=[changed.pk])).content.decode()

    assert "<h1>Everything #7 changed by root</h1>" in html
    diff = diff_table(html)
    report_page = reverse("admin:testapp_document_change", args=[report.pk])
    assert f'<a href="{report_page}">Report</a> <span class="quiet">#{report.pk}</span>' in diff
    assert f'>red</a> <span class="quiet">#{red.pk}</span>' in diff
    assert '<span class="auditq-choice">Live</span> <code class="quiet">live</code>' in diff
    assert {"Owner", "Twin", "Status"} <= set(re.findall(r'<th scope="row"[^>]*>([^<]+)<', diff))
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", html)  # times to the second


def test_a_create_entry_shows_the_values_set_not_nulls(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="Report")
    created = entry(
        document, action="create", changes={"title": [None, "Report"], "status": [None, "draft"]}
    )

    html = client.get(reverse("admin:auditq_auditentry_change", args=[created.pk])).content.decode()

    assert f"<h1>Document #{document.pk} created</h1>" in html
    diff = diff_table(html)
    assert "Report" in diff and "draft" in diff
    assert "null" not in diff and "&rarr;" not in diff


def test_search_by_exact_key_or_part_of_a_name(client, superuser):
    client.force_login(superuser)
    entry(Document(pk=12), object_repr="Quarterly report")
    entry(Document(pk=120), object_repr="Minutes", actor_repr="Alice Martin")

    def found(term: str) -> set[str]:
        response = client.get(reverse(CHANGELIST), {"q": term})
        return {e.object_repr for e in response.context["cl"].result_list}

    assert found("12") == {"Quarterly report"}  # the key is exact: not 120
    assert found("120") == {"Minutes"}
    assert found("TERLY REP") == {"Quarterly report"}  # names: any part, any case
    assert found("martin") == {"Minutes"}
    assert found("nothing like it") == set()


def test_search_results_have_no_date_hierarchy(client, superuser):
    client.force_login(superuser)
    entry(Document(pk=12), object_repr="Quarterly report")

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(CHANGELIST), {"q": "report"})

    assert response.context["cl"].date_hierarchy is None
    assert not [q for q in queries if "MIN(" in q["sql"].upper()]
    assert "occurred_at__year" in client.get(reverse(CHANGELIST)).content.decode()


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
    # The one action offered puts changes back as new ones; none deletes an entry.
    listing = client.get(reverse(CHANGELIST))
    choices = [name for name, _ in listing.context["action_form"].fields["action"].choices]
    assert choices == ["", "revert_entries"]
    assert (bulk.status_code, bulk["Location"]) == (302, reverse(CHANGELIST))
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


@pytest.mark.parametrize("auditq_first", [True, False], ids=["auditq-first", "auditq-appended"])
def test_trail_button_in_any_app_order_and_only_once(client, superuser, settings, auditq_first):
    others = [app for app in settings.INSTALLED_APPS if app != "auditq"]
    settings.INSTALLED_APPS = ["auditq", *others] if auditq_first else [*others, "auditq"]
    client.force_login(superuser)
    document = Document.objects.create(title="plain ModelAdmin")
    chosen = Chosen.objects.create(name="AuditTrailMixin")

    for url in (
        reverse("admin:testapp_document_change", args=[document.pk]),
        reverse("admin:testapp_chosen_change", args=[chosen.pk]),
    ):
        assert client.get(url).content.count(b'class="auditq-trail-link"') == 1, url
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:auditq_dashboard") in index


def test_trail_button_keeps_the_template_the_admin_chose(client, superuser, monkeypatch):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    model_admin = admin.site.get_model_admin(Document)
    monkeypatch.setattr(model_admin, "change_form_template", "admin/testapp/custom_form.html")
    engine = Engine.get_default()
    monkeypatch.setattr(
        engine,
        "template_loaders",
        [Loader(engine, {"admin/testapp/custom_form.html": CUSTOM_FORM}), *engine.template_loaders],
    )

    html = client.get(reverse("admin:testapp_document_change", args=[document.pk])).content

    assert b"custom form" in html
    assert html.count(b'class="auditq-trail-link"') == 1


def test_mixin_can_send_history_to_the_trail(client, superuser):
    client.force_login(superuser)
    chosen = Chosen.objects.create(name="c")

    response = client.get(reverse("admin:testapp_chosen_history", args=[chosen.pk]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse(CHANGELIST) + "?content_type__id__exact=")


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
    (spec,) = [f for f in response.context["cl"].filter_specs if isinstance(f, ModelFilter)]
    assert (str(tag_type.pk), "Testapp | tag") in spec.lookup_choices


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


def test_date_hierarchy_months_and_days_come_from_the_index_not_a_scan(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    for month, day in ((3, 9), (3, 30), (11, 2)):
        entry(document, at=datetime.datetime(2021, month, day, 12, tzinfo=datetime.UTC))
    entry(document, at=datetime.datetime(2022, 1, 5, 12, tzinfo=datetime.UTC))

    with CaptureQueriesContext(connection) as queries:
        year = client.get(reverse(CHANGELIST), {"occurred_at__year": 2021}).content.decode()
        month = client.get(
            reverse(CHANGELIST), {"occurred_at__year": 2021, "occurred_at__month": 3}
        ).content.decode()

    assert re.findall(r"occurred_at__month=(\d+)", year) == ["3", "11"]
    assert re.findall(r"occurred_at__day=(\d+)", month) == ["9", "30"]
    assert not [q for q in queries if "DISTINCT" in q["sql"].upper()]


def test_date_hierarchy_reads_the_first_and_last_dates_once_a_page(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    for year in (2019, 2021):
        entry(document, at=datetime.datetime(year, 6, 1, tzinfo=datetime.UTC))

    with CaptureQueriesContext(connection) as queries:
        client.get(reverse(CHANGELIST))

    assert len([q for q in queries if "MIN(" in q["sql"].upper()]) == 1


@pytest.mark.django_db(transaction=True)
def test_revert_asks_then_puts_the_change_back(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="right")
    document.title = "wrong"
    document.save()
    mistake = AuditEntry.objects.for_object(document).get(action="update")
    chosen = {"action": "revert_entries", "_selected_action": [mistake.pk]}

    asked = client.post(reverse(CHANGELIST), chosen)

    assert asked.status_code == 200
    assert "Revert these changes?" in asked.content.decode()
    document.refresh_from_db()
    assert document.title == "wrong"  # nothing yet

    done = client.post(reverse(CHANGELIST), {**chosen, "post": "yes"}, follow=True)

    document.refresh_from_db()
    assert document.title == "right"
    assert "1 change reverted." in done.content.decode()


@pytest.mark.django_db(transaction=True)
def test_revert_says_why_it_left_a_change_as_it_is(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="a")
    document.title = "b"
    document.save()
    mistake = AuditEntry.objects.for_object(document).get(action="update")
    document.title = "c"
    document.save()

    done = client.post(
        reverse(CHANGELIST),
        {"action": "revert_entries", "_selected_action": [mistake.pk], "post": "yes"},
        follow=True,
    )

    assert "(title): changed since the entry" in done.content.decode()
    document.refresh_from_db()
    assert document.title == "c"


@pytest.mark.django_db(transaction=True)
def test_revert_needs_the_change_permission_of_the_object(client, staff):
    staff("view_auditentry")  # may read the trail, may not change documents
    document = Document.objects.create(title="a")
    document.title = "b"
    document.save()
    mistake = AuditEntry.objects.for_object(document).get(action="update")

    response = client.post(
        reverse(CHANGELIST),
        {"action": "revert_entries", "_selected_action": [mistake.pk], "post": "yes"},
    )

    assert response.status_code == 403
    document.refresh_from_db()
    assert document.title == "b"


def _plan_rows(html: str) -> list[tuple[str, str, str]]:
    """The confirmation page's (field, current value, after the revert) rows."""
    found = re.findall(
        r'<tr class="auditq-row"><th scope="row">(.*?)</th><td>(.*?)</td><td>(.*?)</td></tr>', html
    )
    return [tuple(row) for row in found]


@pytest.mark.django_db(transaction=True)
def test_revert_confirmation_lists_field_current_value_and_value_after(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="right")
    document.title = "wrong"
    document.save()
    mistake = AuditEntry.objects.for_object(document).get(action="update")

    asked = client.post(
        reverse(CHANGELIST), {"action": "revert_entries", "_selected_action": [mistake.pk]}
    )

    assert _plan_rows(asked.content.decode()) == [("title", "wrong", "right")]


@pytest.mark.django_db(transaction=True)
def test_revert_confirmation_never_shows_a_masked_value(client, superuser):
    client.force_login(superuser)
    account = Account.objects.create(name="ann", api_token="tok-old-1234")
    account.api_token = "tok-new-5678"
    account.save()
    change = AuditEntry.objects.for_object(account).get(action="update")

    asked = client.post(
        reverse(CHANGELIST), {"action": "revert_entries", "_selected_action": [change.pk]}
    )

    html = asked.content.decode()
    assert _plan_rows(html) == [("api_token", "masked", "masked")]
    assert "tok-old-1234" not in html and "tok-new-5678" not in html


AS_OF = "admin:auditq_auditentry_as_of"


@pytest.mark.django_db(transaction=True)
def test_view_as_of_an_entry_shows_the_values_just_after_it(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="first")
    document.title = "second"
    document.save()
    document.title = "third"
    document.save()
    middle = AuditEntry.objects.for_object(document).filter(action="update").first()

    page = client.get(reverse("admin:auditq_auditentry_change", args=[middle.pk]))
    shown = client.get(reverse(AS_OF, args=[middle.pk]))

    assert reverse(AS_OF, args=[middle.pk]) in page.content.decode()
    html = shown.content.decode()
    assert shown.status_code == 200
    rows = dict(re.findall(r'<th scope="row">(.*?)</th><td>(.*?)</td>', html))
    assert rows["title"] == "second"


@pytest.mark.django_db(transaction=True)
def test_view_as_of_a_delete_says_the_object_did_not_exist(client, superuser):
    client.force_login(superuser)
    document = Document.objects.create(title="gone")
    key = document.pk
    document.delete()
    deleted = AuditEntry.objects.filter(object_pk=str(key)).get(action="delete")

    shown = client.get(reverse(AS_OF, args=[deleted.pk]))

    assert "The object did not exist then" in shown.content.decode()


@pytest.mark.django_db(transaction=True)
def test_view_as_of_leaves_masked_fields_out(client, superuser):
    client.force_login(superuser)
    account = Account.objects.create(name="ann", api_token="tok-secret-1234")
    created = AuditEntry.objects.for_object(account).get(action="create")

    html = client.get(reverse(AS_OF, args=[created.pk])).content.decode()

    assert "tok-secret-1234" not in html
    assert "Not shown, their values are never kept:" in html
    assert "api_token" in html


@pytest.mark.django_db(transaction=True)
def test_view_as_of_needs_the_view_permission_of_the_trail(client, staff):
    staff("view_document")
    document = Document.objects.create(title="a")
    created = AuditEntry.objects.for_object(document).get(action="create")

    assert client.get(reverse(AS_OF, args=[created.pk])).status_code == 403
