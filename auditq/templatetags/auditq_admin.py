"""Template tags of auditq's admin templates: the dashboard link, durations, progress."""

from __future__ import annotations

import datetime

from django import template
from django.template.context import Context

from auditq.admin.dashboard import dashboard_url
from auditq.admin.formatting import progress
from auditq.models import OperationRun

register = template.Library()


@register.simple_tag(takes_context=True)
def auditq_dashboard_url(context: Context) -> str:
    """The dashboard's URL, or "" when the user may not see it."""
    request = context.get("request")
    return "" if request is None else dashboard_url(request)


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


@register.filter
def auditq_progress(run: OperationRun) -> str:
    """A run's progress as its steps reported it: ``"1,200 of 10,000 (12%)"``."""
    return progress(run.progress_done, run.progress_total)
