"""Running `python cli.py ...` as a user would, in a subprocess."""

import os
import subprocess
import sys

from tests.conftest import REPO


def run_cli(*args, timeout=600, env=None, cwd=None):
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=environment, cwd=cwd or REPO,
    )


def assert_clean_error(result, exit_code, *fragments):
    """A one-paragraph message on stderr, the exit code, and no traceback."""
    assert result.returncode == exit_code, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    text = result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in text, (fragment, text[-3000:])
