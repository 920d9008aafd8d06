"""``manage.py demo`` refuses bad numbers before doing anything, in one line."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--wait", "-1"], "argument --wait: '-1' must be more than 0 and at most 86400"),
        (["--wait", "nan"], "argument --wait: 'nan' must be more than 0 and at most 86400"),
        (["--port", "99999"], "argument --port: '99999' must be a port from 1 to 65535"),
        (["--port", "http"], "argument --port: 'http' is not a port number"),
    ],
)
def test_bad_numbers_are_refused_without_a_traceback(arguments, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "demo", *arguments],
        cwd=ROOT,
        env={"PATH": "", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
