"""Test isolation for mmengine's process-wide state."""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def restore_default_scope():
    """A Runner (or init_default_scope) sets mmengine's default scope for the whole process, which
    would send later registry builds of other tests to the wrong package; put it back."""
    before = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)
