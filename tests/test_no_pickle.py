"""No pickle anywhere: no module of auditq or of the example project imports a
serializer that runs code when it reads, every Celery app in sight sends and accepts JSON
only, and auditq's own messages are JSON whatever the project's serializer says. (A
worker refusing a pickled message: tests/integration/test_bad_messages.py.)"""

import ast
from pathlib import Path

import pytest

from auditq.delivery import broker
from tests.celery_app import app as celery_app
from tests.conftest import ROOT

CODE_RUNNING_READERS = {"pickle", "_pickle", "cPickle", "dill", "shelve", "marshal", "jsonpickle"}


def modules() -> list[Path]:
    return sorted((ROOT / "auditq").rglob("*.py")) + sorted(
        (ROOT / "example_project").rglob("*.py")
    )


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names |= {arg.value for arg in node.args if isinstance(arg, ast.Constant)}
    return names


def test_no_module_imports_a_serializer_that_runs_code():
    found = {
        str(path.relative_to(ROOT)): sorted(imported(path) & CODE_RUNNING_READERS)
        for path in modules()
    }
    assert len(found) > 40  # the scan saw the package
    assert {path: names for path, names in found.items() if names} == {}


def test_the_scan_would_see_an_import(tmp_path):
    """The positive control: the scan finds each way of importing pickle."""
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nfrom dill import loads\n__import__('marshal')\n")
    assert imported(sample) & CODE_RUNNING_READERS == {"pickle", "dill", "marshal"}


@pytest.mark.parametrize(
    "settings_module", ["tests.settings", "example_project.settings"], ids=["tests", "example"]
)
def test_celery_sends_and_accepts_json_only(settings_module):
    module = __import__(settings_module, fromlist=["*"])

    assert module.CELERY_TASK_SERIALIZER == "json"
    assert module.CELERY_ACCEPT_CONTENT == ["json"]
    assert getattr(module, "CELERY_RESULT_SERIALIZER", "json") == "json"
    assert getattr(module, "CELERY_RESULT_ACCEPT_CONTENT", ["json"]) == ["json"]
    assert celery_app.conf.accept_content == ["json"]
    assert celery_app.conf.result_serializer == "json"


def test_auditq_publishes_json_even_when_the_project_would_pickle():
    sent = []

    class PicklingApp:
        """A project whose Celery app would pickle its own tasks."""

        class conf:
            task_serializer = "pickle"

        def send_task(self, name, args, **options):
            sent.append(options)

    broker.send(
        "auditq.tasks.deliver", ([1], "default"), app=PicklingApp(), connection=object(), queue=None
    )

    [options] = sent
    assert options["serializer"] == "json"
