"""Production settings of the example project: ``DJANGO_SETTINGS_MODULE=
example_project.production``. Everything of ``settings``, with debugging off and the
deployment settings ``manage.py check --deploy`` asks for.

Environment variables (beyond those of ``settings``): ``SECRET_KEY`` (required: at least 50
characters), ``ALLOWED_HOSTS`` (comma-separated, required), ``TRUSTED_PROXIES``
(comma-separated addresses or networks of the proxies in front, whose ``X-Forwarded-For``
auditq believes; default none).
"""

import os

from django.core.exceptions import ImproperlyConfigured

from example_project.settings import *  # noqa: F403 - the base, overridden below
from example_project.settings import AUDITQ as BASE_AUDITQ


def required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ImproperlyConfigured(f"example_project.production needs {name} in the environment.")
    return value


DEBUG = False
SECRET_KEY = required("SECRET_KEY")
ALLOWED_HOSTS = [host.strip() for host in required("ALLOWED_HOSTS").split(",") if host.strip()]

SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

# Workers run the relay (RELAY_IN_WORKER, the default); beat re-publishes what is left.
AUDITQ = {
    **BASE_AUDITQ,
    "RELAY_POLL_SECONDS": 0.2,
    "TRUSTED_PROXIES": [
        proxy.strip() for proxy in os.environ.get("TRUSTED_PROXIES", "").split(",") if proxy
    ],
}
