"""pytest imports test modules by their basename (rootdir-relative packages are not used here): two test files of
the same name in tests/unit and tests/integration stop the whole run at collection."""
from __future__ import annotations

from collections import Counter
from pathlib import Path


def test_every_test_module_has_a_name_of_its_own() -> None:
    tests = Path(__file__).parents[1]
    names = Counter(path.name for path in tests.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1]
