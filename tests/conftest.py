"""Fixtures shared by test modules (a module asks for one with ``pytest.mark.usefixtures``)."""

from __future__ import annotations

import pytest
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture(scope="module")
def task_identity():
    """Flower's messages need a run id outside a run, too (strategy tests on a fake grid)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None
