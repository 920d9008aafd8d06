"""The mailing provider's webhook: opens and clicks, in batches, all or nothing."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Email, EmailEvent

MAX_BATCH = 1000
MAX_ID = 2**63 - 1
"""The largest key a ``BigAutoField`` holds: a larger one would fail the query."""


class BadBatch(ValueError):
    """The batch is refused as a whole; the message says why."""


def parse(body: bytes) -> list[tuple[int, str]]:
    """``[{"email_id": 1, "event": "open"}, ...]`` -> ``[(1, "open"), ...]``, validated."""
    try:
        items: Any = json.loads(body)
    # ValueError: not JSON, or a number of more than 4,300 digits; RecursionError: nested
    # too deep for the parser.
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadBatch(f"the body is not JSON we can read: {exc}") from None
    if not isinstance(items, list) or not items:
        raise BadBatch("expected a non-empty JSON list of events")
    if len(items) > MAX_BATCH:
        raise BadBatch(f"at most {MAX_BATCH} events per batch")
    parsed = []
    kinds = set(EmailEvent.Kind.values)
    for number, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"email_id", "event"}:
            raise BadBatch(f'event {number}: expected {{"email_id": <int>, "event": ...}}')
        email_id, kind = item["email_id"], item["event"]
        if not isinstance(email_id, int) or isinstance(email_id, bool):
            raise BadBatch(f"event {number}: email_id must be an integer, not {email_id!r}")
        if not 0 < email_id <= MAX_ID:
            raise BadBatch(f"event {number}: email_id must be from 1 to {MAX_ID}")
        if not isinstance(kind, str) or kind not in kinds:
            raise BadBatch(f"event {number}: unknown event {kind!r} (expected open or click)")
        parsed.append((email_id, kind))
    return parsed


@csrf_exempt
@require_POST
def email_events(request: HttpRequest) -> JsonResponse:
    """Record a batch of email events; a worker then updates the emails' counters."""
    try:
        batch = parse(request.body)
        known = set(
            Email.objects.filter(pk__in={pk for pk, _ in batch}).values_list("pk", flat=True)
        )
        unknown = sorted({pk for pk, _ in batch} - known)
        if unknown:
            raise BadBatch(f"unknown email_id: {', '.join(map(str, unknown))}")
    except BadBatch as exc:
        return JsonResponse({"error": str(exc), "accepted": 0}, status=400)
    with transaction.atomic():  # one outbox row for the batch
        for email_id, kind in batch:
            EmailEvent.objects.create(email_id=email_id, kind=kind)
    return JsonResponse({"accepted": len(batch)}, status=202)
