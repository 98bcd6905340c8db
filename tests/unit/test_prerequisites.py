"""tests/conftest.py: a test whose prerequisite is missing fails with what to do, unless NESTBED_SKIP_MISSING is set
(run on a small suite of its own in a child pytest)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).parents[1] / "conftest.py"
SUITE = '''
import pytest

@pytest.mark.needs("never")
def test_needs_what_is_missing():
    pass

@pytest.mark.needs("always")
def test_needs_what_is_there():
    pass
'''


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    with open(tmp_path / "conftest.py", "a") as conftest:
        conftest.write('\nPREREQUISITES["never"] = (lambda: False, "never is not installed: install never")\n'
                       'PREREQUISITES["always"] = (lambda: True, "always is there")\n')
    (tmp_path / "test_suite.py").write_text(SUITE)
    clean = {k: v for k, v in os.environ.items() if k != "NESTBED_SKIP_MISSING"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, env={**clean, **env}, timeout=120)


def test_a_missing_prerequisite_fails_with_what_to_do(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 error" in result.stdout, result.stdout      # at setup: no fixture runs
    assert "never is not installed: install never (or set NESTBED_SKIP_MISSING=1" in result.stdout
    assert "Traceback" not in result.stdout


def test_the_opt_out_skips_with_the_same_reason(tmp_path):
    result = _run(tmp_path, NESTBED_SKIP_MISSING="1")
    assert result.returncode == 0, result.stdout
    assert "1 passed, 1 skipped" in result.stdout, result.stdout
    assert "never is not installed: install never (NESTBED_SKIP_MISSING is set)" in result.stdout
