"""The admin's background export: the entries' list as filtered, written to a file by an
``Operation`` in the workers, downloaded through an expiring link.

The button posts the list's query string; the run rebuilds the same list as the user who
started it (filters, search, date drill-down, and that user's permissions), keeps to the
entries that existed when it began, and appends them to a file of the default storage in
chunks: each chunk is one step, which re-enters itself until the entries run out, well
inside its lease, and reports its progress. A retried chunk first cuts the file back to
the size the last committed chunk recorded, so no row is written twice.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from functools import partial
from typing import Any, cast

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.mail import send_mail
from django.db.models import Max, QuerySet
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseGone,
    HttpResponseRedirect,
    QueryDict,
)
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from auditq import conf, exports
from auditq.models import AuditEntry, OperationRun
from auditq.operations import Operation, OperationError, Step

logger = logging.getLogger("auditq")

LEASE = 300.0
"""Seconds a chunk may run before another worker takes it over."""

CHUNK_SECONDS = LEASE / 5
"""A chunk stops writing after this long and hands over to the next one."""

SALT = "auditq.export"


def _site(name: str) -> admin.AdminSite:
    for site in admin.sites.all_sites:
        if site.name == name:
            return site
    raise OperationError(f"no admin site is named {name!r} in this process.")


def _as_user(user_id: Any, query: str) -> HttpRequest:
    """A GET of the entries' list with ``query``, by the user who started the export."""
    request = HttpRequest()
    request.method = "GET"
    request.GET = QueryDict(query)
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None or not user.is_active:
        raise OperationError("the user who started the export is gone or inactive.")
    request.user = user
    return request


def filtered(step: Step) -> QuerySet[AuditEntry]:
    """The entries the user's list showed, as that user may see them now, up to the last
    entry recorded when the export began, oldest first.

    Raises:
        OperationError: the user may no longer view entries (retrying cannot help).
    """
    model_admin = _site(step["site"])._registry[AuditEntry]
    request = _as_user(step["user_id"], step["query"])
    if not model_admin.has_view_permission(request):
        raise OperationError("the user who started the export may no longer view entries.")
    try:
        entries = model_admin.get_changelist_instance(request).queryset
    except IncorrectLookupParameters as exc:
        raise OperationError(f"the list's filters no longer apply: {exc}") from None
    return exports.oldest_first(entries.filter(id__lte=step["last_id"]))


def begin(step: Step) -> None:
    """Fix the entries (those recorded until now), count them, and start the file."""
    last_id = AuditEntry.objects.aggregate(last=Max("id"))["last"] or 0
    step.set("last_id", last_id)
    total = filtered(step).count()
    name = step["file"]
    default_storage.delete(name)  # a begin that ran before, and whose commit was lost
    header = exports.Writer(step["format"]).header()
    step.set("file", default_storage.save(name, ContentFile(header)))
    step.set("size", len(header))
    step.set("written", 0)
    step.progress(0, total)


def write(step: Step) -> None:
    """Append the next chunk of entries to the file; come back while entries remain."""
    entries = filtered(step)
    if step.get("position"):
        entries = exports.after(entries, step["position"])
    writer = exports.Writer(step["format"])
    limit = step.get("chunk_rows") or None
    stop_at = time.monotonic() + CHUNK_SECONDS
    count = 0
    last: exports.Row | None = None
    batch: list[exports.Row] = []
    more = False
    with default_storage.open(step["file"], "r+b") as file:
        # A chunk that ran before and whose commit was lost wrote past the size kept.
        file.seek(step["size"])
        file.truncate()
        for last in exports.rows(entries):
            batch.append(last)
            count += 1
            if len(batch) == exports.CHUNK_SIZE:
                file.write(writer.lines(batch))
                batch = []
            if count == limit or time.monotonic() > stop_at:
                more = True
                break
        if batch:
            file.write(writer.lines(batch))
        size = file.tell()
    if last is not None:
        step.set("position", exports.position(last))
    written = step["written"] + count
    step.set("size", size)
    step.set("written", written)
    step.progress(written)
    if more:
        step.jump_to(step.branch, write)


def finish(step: Step) -> None:
    """Say the file is ready: by email, when email is configured and the user has one."""
    step.set("finished_at", datetime.datetime.now(datetime.UTC).isoformat())
    address = _email_of(step["user_id"])
    if not address or not _email_configured():
        return
    link = step.get("base_url", "") + download_path(step["site"], step.run_id)
    written = step["written"]
    try:
        send_mail(
            f"Your export of {written} audit entries is ready",
            f"The export you started (operation run #{step.run_id}) wrote {written} audit "
            f"entries.\n\nDownload it (staff who may view audit entries; the link works "
            f"for {_hours(conf.get().EXPORT_LINK_SECONDS)}):\n{link}\n",
            None,
            [address],
        )
    except Exception as exc:  # the file is there; a mail server's mood must not fail it
        logger.warning("auditq: export run %s: the email was not sent: %s", step.run_id, exc)
        step.set("email", f"not sent: {type(exc).__name__}: {exc}")
        return
    step.set("email", f"sent to {address}")


EXPORT = Operation("auditq.export", main=[begin, write, finish], lease=LEASE)
"""The background export started by the entries' list's "Export" button."""


def _email_configured() -> bool:
    configured = cast(Any, settings).is_overridden  # LazySettings has it; the stubs miss it
    return bool(configured("EMAIL_BACKEND") or configured("EMAIL_HOST"))


def _email_of(user_id: Any) -> str:
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    field = get_user_model().get_email_field_name()
    return str(getattr(user, field, "") or "") if user is not None else ""


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:g} hours" if hours != 1 else "1 hour"


def token(run_id: int) -> str:
    """A signed, timestamped token naming the run (expires: ``EXPORT_LINK_SECONDS``)."""
    return signing.TimestampSigner(salt=SALT).sign(str(run_id))


def download_path(site: str, run_id: int) -> str:
    """The download link of the run's file, signed now."""
    return reverse(f"{site}:auditq_export_download", args=[token(run_id)])


def download_url(request: HttpRequest, site: str, run: OperationRun) -> str | None:
    """The link for the run's page: a finished export, for a user who may view entries."""
    if run.name != EXPORT.name or run.status != OperationRun.Status.SUCCEEDED:
        return None
    if not request.user.has_perm("auditq.view_auditentry"):
        return None
    return download_path(site, run.pk)


def urls(model_admin: admin.ModelAdmin) -> list[URLPattern]:
    """The export's URLs, for the entries' admin: start (POST) and download."""
    site = model_admin.admin_site
    return [
        path(
            "export/",
            site.admin_view(require_POST(partial(start_view, model_admin))),
            name="auditq_export",
        ),
        path(
            "export/<str:signed>/",
            site.admin_view(partial(download_view, model_admin)),
            name="auditq_export_download",
        ),
    ]


def start_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """Start an export of the list as filtered (``query``) in ``format``; open its run."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    format = request.POST.get("format", "")
    query = request.POST.get("query", "")
    site = model_admin.admin_site.name
    changelist = reverse(f"{site}:auditq_auditentry_changelist")
    if format not in exports.FORMATS:
        messages.error(request, f"Export formats: {', '.join(exports.FORMATS)}; not {format!r}.")
        return HttpResponseRedirect(f"{changelist}?{query}")
    run = EXPORT.start(
        format=format,
        query=query,
        site=site,
        user_id=request.user.pk,
        file=f"auditq/exports/{uuid.uuid4().hex}/audit-entries.{format}",
        base_url=request.build_absolute_uri("/").rstrip("/"),
    )
    if request.user.has_perm("auditq.view_operationrun"):
        return HttpResponseRedirect(reverse(f"{site}:auditq_operationrun_change", args=[run.pk]))
    mail = " You will get an email when it is ready." if _email_of(request.user.pk) else ""
    messages.success(request, f"Export #{run.pk} started: a worker writes the file.{mail}")
    return HttpResponseRedirect(f"{changelist}?{query}")


def download_view(
    model_admin: admin.ModelAdmin, request: HttpRequest, signed: str
) -> HttpResponseBase:
    """The run's file, for staff who may view entries, while the link is fresh."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    signer = signing.TimestampSigner(salt=SALT)
    try:
        run_id = int(
            signer.unsign(
                signed, max_age=datetime.timedelta(seconds=conf.get().EXPORT_LINK_SECONDS)
            )
        )
    except signing.SignatureExpired:
        return HttpResponseGone(
            "This download link has expired: open the export's run page for a fresh one."
        )
    except (signing.BadSignature, ValueError):
        raise Http404("No such export.") from None
    run = OperationRun.objects.filter(pk=run_id, name=EXPORT.name, status="succeeded").first()
    if run is None or not default_storage.exists(run.values.get("file", "")):
        raise Http404("No such export, or its file is gone.")
    name = run.values["file"]
    return FileResponse(
        default_storage.open(name, "rb"),
        as_attachment=True,
        filename=f"audit-entries-{run.pk}.{run.params['format']}",
    )


def form_context(request: HttpRequest) -> dict[str, Any]:
    """What the list's Export form needs: the query string to export."""
    return {"auditq_export_query": request.GET.urlencode()}
