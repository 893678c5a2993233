"""floodguard.kernel._nfq without a kernel queue: constants and argument checks (nothing is
bound; tests/integration/test_nfqueue_binding.py runs the binding against the real kernel)."""

from __future__ import annotations

import pytest

from floodguard.kernel import _nfq, nfqueue


def test_copy_range_is_the_kernels_largest_copy() -> None:
    # a netlink attribute's 16-bit length less its 4-byte header
    assert nfqueue.COPY_RANGE == _nfq.MAX_COPY_RANGE == 0xFFFF - 4
    assert nfqueue.MAX_PER_POLL >= _nfq.BATCH


@pytest.mark.parametrize("kwargs", [
    {"queue_num": -1}, {"queue_num": 65536}, {"queue_num": 1, "max_len": 0},
    {"queue_num": 1, "copy_range": 0}, {"queue_num": 1, "rcvbuf": 0},
])
def test_bad_arguments_are_refused_before_binding(kwargs: dict[str, int]) -> None:
    with pytest.raises((ValueError, OverflowError)):
        _nfq.Queue(**kwargs)


def test_unbound_queue_is_closed() -> None:
    queue = _nfq.Queue.__new__(_nfq.Queue)
    assert queue.closed and queue.packets == 0 and queue.errors == 0
    with pytest.raises(ValueError, match="closed"):
        queue.run(lambda payload, hook: True, 0)
    with pytest.raises(ValueError, match="closed"):
        queue.fileno()
    queue.close()
    queue.close()


def test_run_checks_its_arguments() -> None:
    queue = _nfq.Queue.__new__(_nfq.Queue)
    with pytest.raises(TypeError):
        queue.run(42)
    with pytest.raises(ValueError):
        queue.run(lambda payload, hook: True, 0, 0)
    with pytest.raises(ValueError):
        queue.run(lambda payload, hook: True, float("nan"))
