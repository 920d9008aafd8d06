#!/usr/bin/env bash
# The whole suite, twice: on PostgreSQL (DATABASE_URL, default the local server) and on
# SQLite; then tests/audit_db, with the audit entries in a PostgreSQL database of their
# own (tests.settings_audit_db), beside each of the two. With CI=true an unreachable
# PostgreSQL is a failure; elsewhere those passes are skipped with a warning. pytest's
# exit 5 (no tests collected) counts as a failure; a pass that none of the paths given
# as arguments concern is not run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
PG_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
failed=0

run_pass() {
    local name="$1"
    shift
    echo "==> $name"
    "$@"
    local rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "==> $name: pytest collected no tests: failing" >&2
        rc=1
    fi
    [[ $rc -eq 0 ]] || failed=1
    echo "==> $name: exit $rc"
}

pg_reachable() {
    "$PY" -c 'import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()' \
        "$PG_URL" 2>/dev/null
}

# Which passes each path argument concerns: tests/audit_db runs only in its own passes,
# tests/postgres only in the PostgreSQL pass. Options go to every pass; a pass that none
# of the paths given concern is not run.
audit_dir="$(realpath tests/audit_db)"
postgres_dir="$(realpath tests/postgres)"
options=() main_paths=() sqlite_paths=() audit_paths=()
paths=0
under() { [[ "$1" == "$2" || "$1" == "$2"/* ]]; }
for arg in "$@"; do
    path="${arg%%::*}"
    if [[ "$arg" == -* || ! -e "$path" ]]; then
        options+=("$arg")
        continue
    fi
    ((paths++))
    full="$(realpath "$path")"
    if under "$full" "$audit_dir"; then
        audit_paths+=("$arg")
        continue
    fi
    main_paths+=("$arg")
    under "$full" "$postgres_dir" || sqlite_paths+=("$arg")
    [[ "$audit_dir" == "$full"/* ]] && audit_paths+=("$arg")
done
wanted() { ((paths == 0 || $1 > 0)); }

if pg_reachable || [[ "${CI:-}" == "true" ]]; then
    postgres=1
else
    postgres=0
    echo "==> PostgreSQL: not reachable at $PG_URL; its passes skipped (with CI=true they fail)" >&2
fi
if ((postgres)) && wanted ${#main_paths[@]}; then
    run_pass "PostgreSQL" env DATABASE_URL="$PG_URL" AUDITQ_REQUIRE_POSTGRES=1 \
        "$PY" -m pytest "${options[@]}" "${main_paths[@]}"
fi
if wanted ${#sqlite_paths[@]}; then
    run_pass "SQLite" env -u DATABASE_URL "$PY" -m pytest --ignore=tests/postgres \
        "${options[@]}" "${sqlite_paths[@]}"
fi
if ((postgres)) && wanted ${#audit_paths[@]}; then
    run_pass "PostgreSQL + audit database" env DATABASE_URL="$PG_URL" AUDITQ_REQUIRE_POSTGRES=1 \
        AUDITQ_TEST_AUDIT_DATABASE_URL="$PG_URL" "$PY" -m pytest --ds tests.settings_audit_db \
        "${options[@]}" "${audit_paths[@]}"
    run_pass "SQLite + audit database on PostgreSQL" env -u DATABASE_URL \
        AUDITQ_TEST_AUDIT_DATABASE_URL="$PG_URL" "$PY" -m pytest --ds tests.settings_audit_db \
        "${options[@]}" "${audit_paths[@]}"
fi

exit $failed
