#!/usr/bin/env python
"""How fast the ``AuditEntry`` admin renders on a big table (< 300 ms at 1M rows; search < 100 ms).

Usage::

    .venv/bin/python bench/admin_changelist.py [--rows 1000000] [--keep] [--repeat 15]
                                               [--warmup 2] [--explain-all] [--json FILE]

The script configures Django itself (admin, auth, contenttypes, sessions, messages,
django_celery_results, auditq), creates a throwaway PostgreSQL database
``auditq_adminbench_<pid>`` on the server named by ``DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/test``; that database itself is not touched), migrates,
and fills ``auditq_auditentry`` with ``--rows`` entries in one ``INSERT ... SELECT ... FROM
generate_series`` (inserted in time order, as an append-only trail grows), then runs
``VACUUM ANALYZE``. The distribution:

- 20 content types: 18 dummy ``ContentType`` rows (app label ``adminbench``, no model
  class) and ``auth.user`` / ``auth.group``, which have an admin page, so that the
  changelist builds an object link for a tenth of the rows;
- ``object_pk`` over 100,000 objects with a power-law skew (object ``k`` is picked with
  ``k = 1 + floor(100000 * random()^3)``): a handful of objects hold thousands of entries,
  most hold a few;
- actions: 8% create, 87% update, 5% delete; ``changes`` holds 1 to 4 fields (sometimes a
  many-to-many ``{"added": [...], "removed": [...]}``);
- ``actor_id`` over 500 users (skewed, 10% without actor), ``occurred_at`` spread over the
  last 365 days, ``event_id`` from ``gen_random_uuid()``.

Then, logged in as a superuser with Django's test ``Client``, it times each admin page
side by side in one run: 2 warm-up rounds, then ``--repeat`` rounds in which every page is
requested once (so machine noise hits all pages alike); median and p90 of the wall time of
``client.get()`` (middleware, view, SQL and template rendering). A separate, untimed request
per page counts the SQL queries (through ``connection.execute_wrapper``) and re-runs the
slowest one under ``EXPLAIN (ANALYZE, BUFFERS)``.

A page that 404s, redirects or raises (say, because the admin is being rewritten) is
reported and the others are still measured. The database is dropped at the end unless
``--keep`` is given. Exit status: 0 when it measured (targets met or not), 2 when the set-up
failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from benchdb import postgres_settings, postgres_url, server_execute

TARGET_MS = 300.0  # issue 3: changelist and per-object trail, PostgreSQL, 1,000,000 rows
SEARCH_TARGET_MS = 100.0  # "The first hour": the admin's search (exact key, part of a name)
N_OBJECTS = 100_000
N_USERS = 500
MODEL_NAMES = (
    "order",
    "invoice",
    "customer",
    "product",
    "shipment",
    "payment",
    "refund",
    "subscription",
    "coupon",
    "address",
    "ticket",
    "comment",
    "article",
    "page",
    "employee",
    "contract",
    "asset",
    "booking",
)  # 18 dummy models, plus auth.user and auth.group (real, registered in the admin)
CHANGELIST = "/admin/auditq/auditentry/"


class BenchError(Exception):
    """The set-up failed: nothing can be measured."""


# --------------------------------------------------------------------------- set-up


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the AuditEntry admin on a big PostgreSQL table (see bench/README.md)."
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="entries to create")
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests per page first")
    parser.add_argument(
        "--explain-all",
        action="store_true",
        help="print the EXPLAIN of every page's slowest query, not only the changelist's "
        "and the per-object trails'",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1 and --warmup >= 0")
    return args


def configure(database: dict[str, Any]) -> None:
    """settings.configure() a minimal project whose URLconf is the admin, and set Django up."""
    import django
    from django.conf import settings

    urls = types.ModuleType("adminbench_urls")
    urls.urlpatterns = []  # type: ignore[attr-defined]  # filled in after django.setup()
    sys.modules["adminbench_urls"] = urls

    settings.configure(
        DEBUG=False,
        SECRET_KEY="auditq-adminbench",
        ALLOWED_HOSTS=["testserver"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "django_celery_results",
            "auditq",  # appended, as people do: auditq's admin works in any order
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "auditq.middleware.AuditContextMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF="adminbench_urls",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        STATIC_URL="/static/",
        DATABASES={"default": database},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        CELERY_RESULT_BACKEND="django-db",
        AUDITQ={},
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            # The script reports 404s and errors itself.
            "loggers": {"django.request": {"level": "CRITICAL"}},
        },
    )
    django.setup()  # imports auditq.admin through the admin's autodiscover()

    from django.contrib import admin
    from django.urls import path

    urls.urlpatterns = [path("admin/", admin.site.urls)]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- data


@dataclass
class Dataset:
    rows: int
    fill_seconds: float
    analyze_seconds: float
    table_mb: float
    indexes_mb: float
    objects: int
    objects_1000: int
    hot: tuple[int, str, str, int]  # content type id, its name, object_pk, entries
    cold: tuple[int, str, str, int]
    warm_pk: str
    cold_repr: str  # the cold object's repr: a text search that few entries match
    actor: str  # a user with about a thousand entries: a search by actor name
    entry_id: int
    delete_count: int
    indexes: list[str]


FILL_SQL = """
INSERT INTO auditq_auditentry (
    event_id, content_type_id, object_pk, object_repr, action, changes, actor_id,
    actor_repr, remote_addr, request_id, context, occurred_at, recorded_at
)
SELECT
    gen_random_uuid(),
    (%(cts)s::bigint[])[1 + s.k %% %(n_cts)s],
    s.k::text,
    initcap((%(models)s::text[])[1 + s.k %% %(n_cts)s]) || ' #' || s.k,
    s.action,
    CASE s.action
        WHEN 'create' THEN jsonb_build_object(
            'status', jsonb_build_array(NULL, 'draft'),
            'amount', jsonb_build_array(NULL, round((s.r1 * 500)::numeric, 2)::text),
            'title', jsonb_build_array(NULL, 'Item ' || s.k))
        WHEN 'delete' THEN jsonb_build_object(
            'status', jsonb_build_array('cancelled', NULL),
            'amount', jsonb_build_array(round((s.r1 * 500)::numeric, 2)::text, NULL))
        ELSE
            jsonb_build_object('status', jsonb_build_array(
                (ARRAY['draft', 'open', 'paid', 'shipped'])[1 + floor(s.r2 * 4)::int],
                (ARRAY['open', 'paid', 'shipped', 'closed'])[1 + floor(s.r3 * 4)::int]))
            || CASE WHEN s.nf >= 2 THEN jsonb_build_object('amount', jsonb_build_array(
                round((s.r1 * 500)::numeric, 2)::text, round((s.r2 * 500)::numeric, 2)::text))
                ELSE '{}'::jsonb END
            || CASE WHEN s.nf >= 3 THEN jsonb_build_object('note', jsonb_build_array(
                'Called the customer about ' || s.k, 'Called again, left a message ' || s.g))
                ELSE '{}'::jsonb END
            || CASE WHEN s.nf >= 4 THEN jsonb_build_object('tags', jsonb_build_object(
                'added', jsonb_build_array((s.g %% 40)::text), 'removed', '[]'::jsonb))
                ELSE '{}'::jsonb END
    END,
    s.actor_id,
    COALESCE(u.username, ''),
    CASE WHEN s.r4 < 0.1 THEN NULL
        ELSE ('10.' || (s.g %% 200) || '.' || (s.k %% 250) || '.' || (1 + s.g %% 250))::inet
    END,
    md5(s.g::text || s.r1::text),
    CASE WHEN s.r4 > 0.8 THEN jsonb_build_object('reason', 'csv import') ELSE '{}'::jsonb END,
    s.occurred_at,
    s.occurred_at + s.r2 * interval '2 seconds'
FROM (
    SELECT
        g, k, r1, r2, r3, r4, nf, actor_id, occurred_at,
        CASE WHEN ra < 0.08 THEN 'create' WHEN ra < 0.95 THEN 'update' ELSE 'delete' END
            AS action
    FROM (
        SELECT
            g,
            least(1 + floor(%(n_objects)s * random() ^ 3)::int, %(n_objects)s) AS k,
            random() AS ra, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
            1 + floor(random() * 4)::int AS nf,
            CASE WHEN random() < 0.1 THEN NULL
                ELSE (%(users)s::bigint[])[1 + floor(%(n_users)s * random() ^ 2)::int]
            END AS actor_id,
            now() - random() * interval '365 days' AS occurred_at
        FROM generate_series(1, %(rows)s) AS g
        OFFSET 0
    ) AS raw
) AS s
LEFT JOIN auth_user AS u ON u.id = s.actor_id
ORDER BY s.occurred_at, s.g
"""


def fill(rows: int) -> Dataset:
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    from auditq.models import AuditEntry

    user_model = get_user_model()
    cts = ContentType.objects.bulk_create(
        [ContentType(app_label="adminbench", model=name) for name in MODEL_NAMES]
    )
    # Two real models with an admin page, so that the changelist's object links are built
    # for some rows (a dummy content type has no model class, hence no link).
    cts += [ContentType.objects.get_by_natural_key("auth", name) for name in ("user", "group")]
    users = user_model.objects.bulk_create(
        [
            user_model(
                username=f"user{i:03d}",
                email=f"user{i:03d}@example.com",
                first_name=f"First{i}",
                last_name=f"Last{i}",
                password="!",
            )
            for i in range(1, N_USERS + 1)
        ]
    )
    params = {
        "cts": [ct.pk for ct in cts],
        "models": [ct.model for ct in cts],
        "n_cts": len(cts),
        "users": [u.pk for u in users],
        "n_users": len(users),
        "n_objects": N_OBJECTS,
        "rows": rows,
    }
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        cursor.execute("SET work_mem = '256MB'")  # the ORDER BY of the fill, in memory
        cursor.execute(FILL_SQL, params)
        cursor.execute("RESET work_mem")
    fill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with connection.cursor() as cursor:
        # VACUUM too, not only ANALYZE: autovacuum would have set the visibility map of an
        # append-only table long ago, which index-only scans rely on.
        cursor.execute("VACUUM (ANALYZE) auditq_auditentry")
        cursor.execute("ANALYZE")
    analyze_seconds = time.perf_counter() - start

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_table_size('auditq_auditentry'), pg_indexes_size('auditq_auditentry')"
        )
        table_bytes, index_bytes = cursor.fetchone()
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'auditq_auditentry' "
            "ORDER BY indexname"
        )
        indexes = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            """
            SELECT content_type_id, object_pk, count(*) AS n
            FROM auditq_auditentry GROUP BY content_type_id, object_pk
            """
        )
        per_object = cursor.fetchall()
    per_object.sort(key=lambda row: (-row[2], row[1]))
    hot = per_object[0]
    colds = [row for row in per_object if 2 <= row[2] <= 5]
    cold = colds[len(colds) // 2] if colds else per_object[-1]
    warm = per_object[min(len(per_object) - 1, 200)]
    names = dict(ContentType.objects.filter(pk__in=[hot[0], cold[0]]).values_list("pk", "model"))
    entry_id = (
        AuditEntry.objects.filter(content_type_id=hot[0], object_pk=hot[1])
        .order_by("-occurred_at", "-id")
        .values_list("pk", flat=True)[0]
    )
    return Dataset(
        rows=rows,
        fill_seconds=fill_seconds,
        analyze_seconds=analyze_seconds,
        table_mb=table_bytes / 2**20,
        indexes_mb=index_bytes / 2**20,
        objects=len(per_object),
        objects_1000=sum(1 for row in per_object if row[2] >= 1000),
        hot=(hot[0], names[hot[0]], hot[1], hot[2]),
        cold=(cold[0], names[cold[0]], cold[1], cold[2]),
        warm_pk=warm[1],
        cold_repr=AuditEntry.objects.filter(content_type_id=cold[0], object_pk=cold[1])
        .values_list("object_repr", flat=True)
        .first()
        or "",
        actor=f"user{N_USERS // 2:03d}",
        entry_id=entry_id,
        delete_count=AuditEntry.objects.filter(action="delete").count(),
        indexes=indexes,
    )


# --------------------------------------------------------------------------- measuring


@dataclass
class Query:
    sql: str
    params: Any
    ms: float
    rows: int  # -1 when unknown

    @property
    def short(self) -> str:
        sql = " ".join(self.sql.split())
        return sql if len(sql) <= 150 else sql[:100] + " ... " + sql[-45:]


# The changelist's own query: the one that loads whole AuditEntry rows, ordered.
LIST_QUERY = re.compile(r'^\s*SELECT\s+(?:DISTINCT\s+)?"auditq_auditentry"\."id",', re.I)


@dataclass
class Page:
    key: str
    label: str
    url: str
    targeted: bool  # one of the targets (changelist, per-object trail, search)
    explain: bool  # print the slowest query's plan by default
    times_ms: list[float] = field(default_factory=list)
    error: str | None = None
    queries: int | None = None
    sql_ms: float | None = None
    slowest: Query | None = None
    plan: str | None = None
    plan_nodes: str | None = None
    list_query: Query | None = None  # when it is not the slowest one
    list_plan: str | None = None
    list_nodes: str | None = None
    size_kb: float | None = None
    target_ms: float = TARGET_MS
    query_log: list[Query] = field(default_factory=list)

    @property
    def slowest_ms(self) -> float | None:
        return self.slowest.ms if self.slowest else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def p90(self) -> float | None:
        if not self.times_ms:
            return None
        ordered = sorted(self.times_ms)
        return ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]  # nearest rank

    @property
    def met(self) -> bool | None:
        return None if self.median is None else self.median < self.target_ms


def trail_url(content_type_id: int, object_pk: str) -> str:
    query = urlencode({"content_type__id__exact": content_type_id, "object_pk": object_pk})
    return f"{CHANGELIST}?{query}"


def pages_for(data: Dataset) -> list[Page]:
    hot_ct, hot_model, hot_pk, hot_n = data.hot
    cold_ct, cold_model, cold_pk, cold_n = data.cold
    return [
        Page("changelist", "changelist", CHANGELIST, True, True),
        Page(
            "trail_hot",
            f"per-object trail, hot ({hot_model} {hot_pk}: {hot_n:,} entries)",
            trail_url(hot_ct, hot_pk),
            True,
            True,
        ),
        Page(
            "trail_cold",
            f"per-object trail, cold ({cold_model} {cold_pk}: {cold_n} entries)",
            trail_url(cold_ct, cold_pk),
            True,
            True,
        ),
        Page(
            "action",
            f"filter action=delete ({data.delete_count:,} entries)",
            f"{CHANGELIST}?action__exact=delete",
            False,
            False,
        ),
        Page(
            "search",
            f"search, an object key: q={data.warm_pk}",
            f"{CHANGELIST}?{urlencode({'q': data.warm_pk})}",
            True,
            True,
            target_ms=SEARCH_TARGET_MS,
        ),
        Page(
            "search_repr",
            f"search, part of a repr: q={data.cold_repr}",
            f"{CHANGELIST}?{urlencode({'q': data.cold_repr})}",
            True,
            True,
            target_ms=SEARCH_TARGET_MS,
        ),
        Page(
            "search_actor",
            f"search, an actor's name: q={data.actor}",
            f"{CHANGELIST}?{urlencode({'q': data.actor})}",
            True,
            True,
            target_ms=SEARCH_TARGET_MS,
        ),
        Page("page50", "changelist page 50", f"{CHANGELIST}?p=50", False, False),
        Page(
            "detail",
            "entry detail (change page)",
            f"{CHANGELIST}{data.entry_id}/change/",
            False,
            False,
        ),
    ]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def request(client: Any, page: Page) -> float | None:
    """GET the page once; return the wall time in ms, or record the error and return None."""
    start = time.perf_counter()
    try:
        response = client.get(page.url)
    except Exception as exc:
        if page.error is None:
            print(f"\n[{page.key}] {page.url} raised:", file=sys.stderr)
            traceback.print_exc()
        page.error = first_line(exc)
        return None
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        where = response.get("Location", "")
        page.error = f"HTTP {response.status_code}" + (f" -> {where}" if where else "")
        return None
    page.size_kb = len(response.content) / 1024
    return elapsed


@contextlib.contextmanager
def recording(log: list[Query]) -> Iterator[None]:
    from django.db import connection

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, ctx)
        finally:
            ms = (time.perf_counter() - start) * 1000
            rows = getattr(ctx.get("cursor"), "rowcount", -1)
            log.append(Query(sql, params, ms, rows if isinstance(rows, int) else -1))

    with connection.execute_wrapper(wrapper):
        yield


SCAN = re.compile(
    r"((?:Parallel )?(?:Seq Scan|Index Only Scan(?: Backward)?|Index Scan(?: Backward)?|"
    r"Bitmap Index Scan|Bitmap Heap Scan)(?: using \S+)? on \S+)"
)


def explain(sql: str, params: Any) -> tuple[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    nodes = []
    for match in SCAN.finditer(plan):
        if match.group(1) not in nodes:
            nodes.append(match.group(1))
    top = plan.splitlines()[0].split("  (")[0].strip() if plan else ""
    return plan, f"{top}: " + "; ".join(nodes) if nodes else top


def bound_sql(sql: str, params: Any) -> str:
    """The query with its parameters, as psycopg's client-side binding sends it."""
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            return cursor.mogrify(sql, params)
    except Exception:
        return f"{sql}\n-- params: {params!r}"


def profile(client: Any, page: Page) -> None:
    """One untimed request: count its queries, EXPLAIN the slowest one and the list query."""
    log: list[Query] = []
    with recording(log):
        if request(client, page) is None:
            return
    page.queries = len(log)
    page.sql_ms = sum(q.ms for q in log)
    page.query_log = log
    if not log:
        return
    page.slowest = max(log, key=lambda q: q.ms)
    page.plan, page.plan_nodes = safe_explain(page.slowest)
    lists = [q for q in log if LIST_QUERY.match(q.sql) and "LIMIT 21" not in q.sql]
    if lists:
        page.list_query = max(lists, key=lambda q: q.rows)
        if page.list_query is not page.slowest:
            page.list_plan, page.list_nodes = safe_explain(page.list_query)


def safe_explain(query: Query) -> tuple[str | None, str | None]:
    if not query.sql.lstrip().upper().startswith(("SELECT", "WITH")):
        return None, None
    try:
        return explain(query.sql, query.params)
    except Exception as exc:
        return None, f"EXPLAIN failed: {first_line(exc)}"


def measure(pages: list[Page], repeat: int, warmup: int, superuser: Any) -> None:
    from django.test import Client

    client = Client()
    client.force_login(superuser)
    for _ in range(warmup):
        for page in pages:
            request(client, page)
    for _ in range(repeat):
        for page in pages:
            if page.error is None:
                elapsed = request(client, page)
                if elapsed is not None:
                    page.times_ms.append(elapsed)
    for page in pages:
        if page.error is None:
            profile(client, page)


# --------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(pages: list[Page]) -> str:
    lines = [
        "| view | median ms | p90 ms | queries | SQL ms | slowest query ms | target | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for page in pages:
        target = f"< {page.target_ms:.0f} ms" if page.targeted else f"(< {page.target_ms:.0f} ms)"
        met = f"error: {page.error}" if page.error else ("**yes**" if page.met else "**no**")
        lines.append(
            f"| {page.label} | {fmt(page.median)} | {fmt(page.p90)} | "
            f"{page.queries if page.queries is not None else '—'} | {fmt(page.sql_ms)} | "
            f"{fmt(page.slowest_ms)} | {target} | {met} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, str]:
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
        cursor.execute("SHOW work_mem")
        work_mem = cursor.fetchone()[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": f"{server} (shared_buffers {shared_buffers}, work_mem {work_mem})",
        "load average before measuring": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def code_version() -> str:
    """Which admin is measured: git HEAD, and a hash, size and mtime of ``auditq/admin/``.

    Taken at start-up, just before Django imports the admin.
    """
    import hashlib
    import subprocess
    from pathlib import Path

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted((Path(root) / "auditq" / "admin").glob("*.py"))
    files.append(Path(root) / "auditq" / "diffs.py")
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.read_bytes())
    size = sum(path.stat().st_size for path in files)
    latest = max(path.stat().st_mtime for path in files)
    mtime = datetime.datetime.fromtimestamp(latest, datetime.UTC)
    admin = (
        f"auditq/admin/*.py + diffs.py sha1 {digest.hexdigest()[:10]}, {size:,} bytes, "
        f"last modified {mtime:%Y-%m-%d %H:%M:%S} UTC"
    )

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *argv], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("log", "-1", "--format=%h %s")
        dirty = git("status", "--porcelain", "--", "auditq/")
    except (OSError, subprocess.CalledProcessError):
        return admin
    state = "uncommitted changes in auditq/" if dirty else "clean"
    return f"HEAD {head[:70]} ({state}); {admin}"


def report(pages: list[Page], data: Dataset, env: dict[str, str], args: argparse.Namespace) -> None:
    print()
    print("== environment")
    for key, value in env.items():
        print(f"{key}: {value}")
    print()
    print("== data")
    print(
        f"{data.rows:,} entries filled in {data.fill_seconds:.1f} s "
        f"(VACUUM ANALYZE {data.analyze_seconds:.1f} s); table {data.table_mb:,.0f} MB, "
        f"indexes {data.indexes_mb:,.0f} MB"
    )
    print(
        f"{data.objects:,} distinct objects, {data.objects_1000} with >= 1,000 entries; "
        f"hottest {data.hot[1]} {data.hot[2]} with {data.hot[3]:,}"
    )
    print("indexes:")
    for index in data.indexes:
        print(f"  {index}")
    print()
    print(f"== requests: median of {args.repeat} after {args.warmup} warm-up rounds")
    for page in pages:
        print(f"{page.key:>11}: {page.url}")
    print()
    print(table(pages))
    print()
    print("slowest query per page (plan nodes from EXPLAIN ANALYZE):")
    for page in pages:
        if page.error:
            print(f"- {page.label}: not measured ({page.error})")
        elif page.plan_nodes:
            print(f"- {page.label}: {fmt(page.slowest_ms)} ms, {page.plan_nodes}")
            if page.list_nodes and page.list_query:
                print(f"    list query: {fmt(page.list_query.ms)} ms, {page.list_nodes}")
    print()
    print("queries per page (ms in the untimed profiling request, SQL shortened):")
    for page in pages:
        if page.query_log:
            print(f"- {page.label}:")
            for q in page.query_log:
                rows = f"{q.rows:>6} rows" if q.rows >= 0 else " " * 11
                print(f"    {q.ms:8.1f} ms {rows}  {q.short}")
    for page in pages:
        if not (page.explain or args.explain_all):
            continue
        for what, query, plan in (
            ("slowest query", page.slowest, page.plan),
            ("list query", page.list_query, page.list_plan),
        ):
            if query and plan:
                print()
                print(f"== EXPLAIN (ANALYZE, BUFFERS), {what} of: {page.label}")
                print(f"-- {fmt(query.ms)} ms in the profiling request")
                print(bound_sql(query.sql, query.params))
                print(plan)
    targeted = [p for p in pages if p.targeted]
    missed = [p.label for p in targeted if p.met is not True]
    print()
    if missed:
        print("TARGET NOT MET (median under the page's target): " + "; ".join(missed))
    else:
        print(
            f"targets met: changelist and per-object trails under {TARGET_MS:.0f} ms, "
            f"searches under {SEARCH_TARGET_MS:.0f} ms"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "environment": env,
                    "rows": data.rows,
                    "fill_seconds": data.fill_seconds,
                    "pages": [
                        {
                            "key": p.key,
                            "label": p.label,
                            "url": p.url,
                            "times_ms": p.times_ms,
                            "median_ms": p.median,
                            "p90_ms": p.p90,
                            "queries": p.queries,
                            "sql_ms": p.sql_ms,
                            "slowest_ms": p.slowest_ms,
                            "slowest_sql": p.slowest.sql if p.slowest else None,
                            "plan": p.plan,
                            "list_plan": p.list_plan,
                            "queries_log": [(q.ms, q.rows, q.short) for q in p.query_log],
                            "error": p.error,
                        }
                        for p in pages
                    ],
                },
                fh,
                indent=2,
                default=str,
            )


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url = postgres_url()
    name = f"auditq_adminbench_{os.getpid()}"
    version = code_version()
    print(f"measuring {version}", flush=True)
    try:
        configure(postgres_settings(url, name))
    except Exception:
        traceback.print_exc()
        print("BENCH FAILED: Django did not start (is auditq.admin importable?)")
        return 2

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    created = False
    try:
        server_execute(url, f'CREATE DATABASE "{name}"')
        created = True
        print(f"database {name} created; migrating ...", flush=True)
        call_command("migrate", verbosity=0, interactive=False)
        superuser = get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        print(f"filling {args.rows:,} entries ...", flush=True)
        data = fill(args.rows)
        print(
            f"filled in {data.fill_seconds:.1f} s, VACUUM ANALYZE {data.analyze_seconds:.1f} s; "
            "measuring ...",
            flush=True,
        )
        env = environment()
        env["auditq"] = version
        pages = pages_for(data)
        measure(pages, args.repeat, args.warmup, superuser)
        report(pages, data, env, args)
    except Exception:
        traceback.print_exc()
        print("BENCH FAILED: set-up error (see the traceback above)")
        return 2
    finally:
        connections.close_all()
        if created and not args.keep:
            server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"database {name} dropped")
        elif created:
            print(f"database {name} kept (--keep)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
