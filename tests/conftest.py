"""Test-run wiring shared by every test directory.

The suite runs on two pytest-xdist workers (`make test`: `-n 2 --dist
loadgroup`). A worker gets whole modules — a module's clusters are its
fixtures' and must not be built twice — and the modules that share the
two-region `walkthrough` session fixture go to one worker together, so the
walkthrough is built once. Each worker's test clusters take numbers from
their own range (tests/e2e/conftest.py). pytest stays below 9: pytest-xdist
3.8 groups tests by renaming their node ids, which pytest 9 no longer
allows, so under 9 the groups are silently ignored.
"""

from __future__ import annotations

import pytest

WALKTHROUGH_GROUP = "walkthrough"


@pytest.hookimpl(tryfirst=True)  # before xdist's hook, which turns the marks into groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        uses_walkthrough = "walkthrough" in getattr(item, "fixturenames", ())
        group = WALKTHROUGH_GROUP if uses_walkthrough else item.module.__name__ if item.module else item.nodeid
        item.add_marker(pytest.mark.xdist_group(group))
