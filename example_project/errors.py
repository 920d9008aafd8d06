"""What Django's debug page may show of the example project's settings."""

import re

from django.views.debug import SafeExceptionReporterFilter


class HiddenURLsFilter(SafeExceptionReporterFilter):
    """Django's filter, also hiding broker, Redis and database URLs, which carry their
    passwords (``CELERY_BROKER_URL``, ``REDIS_URL``, ``DATABASE_URL`` in the environment
    the page lists as ``META``): Django hides only names with ``PASS``, ``KEY``, ``TOKEN``,
    ``SECRET``, ``AUTH``, ``API``, ``SIGNATURE`` or ``HTTP_COOKIE``."""

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + "|URL|BROKER|REDIS",
        flags=re.IGNORECASE,
    )
