"""/metrics answers whatever the broker: its queue depth is left out, never a 500 for the whole scrape."""
import pytest

from api.metrics import queue_depth


@pytest.mark.parametrize("url", ["redis+socket:///tmp/no-such.sock", "redis://127.0.0.1:1/0", "amqp://guest@host//"])
def test_a_broker_it_cannot_read_gives_no_depth(url: str) -> None:
    assert queue_depth(url) is None
