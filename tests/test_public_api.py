"""The public names: importable from ``auditq`` (safe in a ``models.py``), and old paths
that moved still work for a release, with a warning."""

import subprocess
import sys

import pytest

import auditq
from auditq.delivery import relay
from auditq.stream import events, sealing
from tests.conftest import ROOT


def test_every_public_name_is_importable_from_auditq_and_listed_in_order():
    assert auditq.__all__ == sorted(auditq.__all__)
    for name in auditq.__all__:
        assert getattr(auditq, name) is not None, name
    assert {"Operation", "retry_policy", "Event", "Consumer"} <= set(auditq.__all__)


def test_auditq_imports_before_the_apps_are_loaded():
    # As a models.py does: `from auditq import audited` while Django loads the models.
    script = (
        "import os, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'\n"
        "from auditq import Operation, audited, retry_policy\n"
        "django.setup()\n"
        "print('ready')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ready"


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("auditq.events", "Event", events),
        ("auditq.sealing", "scrub", sealing),
        ("auditq.relay", "backlog", relay),
    ],
)
def test_a_moved_path_still_works_with_a_deprecation_warning(old, name, new):
    module = __import__(old, fromlist=[name])

    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new.__name__}\.{name}"):
        found = getattr(module, name)

    assert found is getattr(new, name)


def test_a_name_the_old_path_never_had_is_an_attribute_error():
    import auditq.events

    with pytest.raises(AttributeError, match=r"'auditq\.events' has no attribute 'nothing'"):
        auditq.events.nothing  # noqa: B018
