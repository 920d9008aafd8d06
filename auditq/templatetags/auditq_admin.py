"""Template tags of auditq's admin templates: the trail link and the dashboard link."""

from __future__ import annotations

import datetime

from django import template
from django.template.context import Context
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from auditq.admin import trail_url

register = template.Library()

_RENDERED = "auditq_trail_link_rendered"

TRAIL_TITLE = (
    "Every recorded change to this object, made anywhere (admin, code, tasks), by auditq. "
    "History lists only the edits made in this admin."
)


@register.simple_tag(takes_context=True)
def auditq_trail_link(context: Context) -> str:
    """The "Audit trail" object-tools item of an audited object's change page.

    Rendered at most once per page: both the template override and ``AuditTrailMixin``
    may ask for it.
    """
    request = context.get("request")
    obj = context.get("original")
    if request is None or obj is None or context.render_context.get(_RENDERED):
        return ""
    url = trail_url(request, obj)
    if url is None:
        return ""
    context.render_context[_RENDERED] = True
    return format_html(
        '<li><a href="{}" class="auditq-trail-link" title="{}">Audit trail</a></li>',
        url,
        TRAIL_TITLE,
    )


@register.simple_tag(takes_context=True)
def auditq_dashboard_url(context: Context) -> str:
    """The dashboard's URL, or "" when the user may not see it."""
    request = context.get("request")
    if request is None or not request.user.has_perm("auditq.view_auditentry"):
        return ""
    try:
        return reverse("admin:auditq_dashboard", current_app=getattr(request, "current_app", None))
    except NoReverseMatch:
        return ""


@register.filter
def auditq_duration(value: datetime.timedelta | None) -> str:
    """A delay as a person reads it: "850 ms", "12.5 s", "4 min 10 s", "3 h 5 min"."""
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days {hours % 24} h"
