import pytest

from guestcode import TEST_MEMORY


@pytest.fixture
def machine():
    from kvmdune.machine import Machine

    m = Machine(TEST_MEMORY)
    yield m
    m.close()
