"""Token buckets: per source, per source + REGISTER, per gateway group, global."""

import pytest

from floodguard.policy.buckets import (
    OVER_REGISTER,
    OVER_SIP,
    PASS,
    GatewayLimiter,
    SourceLimiter,
    TokenBucket,
)


def test_bucket_burst_then_rate() -> None:
    b = TokenBucket(rate=5, burst=10, now=0.0)
    assert all(b.take(0.0) for _ in range(10))
    assert not b.take(0.0)
    assert not b.take(0.1)  # 0.5 token
    assert b.take(0.2)  # 1 token
    assert not b.take(0.2)
    # never more than burst, however long idle
    assert sum(b.take(1000.0) for _ in range(20)) == 10


def test_bucket_reconfigure_clamps_tokens() -> None:
    b = TokenBucket(rate=5, burst=10)
    b.reconfigure(1, 2)
    assert sum(b.take(0.0) for _ in range(10)) == 2
    with pytest.raises(ValueError):
        b.reconfigure(0, 2)
    with pytest.raises(ValueError):
        TokenBucket(1, 0.5)


def test_source_limiter_register_and_sip() -> None:
    lim = SourceLimiter(5, 10, 20, 50, cap=100)
    rec = lim.add(0.0, "192.0.2.1", tag=-1, gen=1)
    results = [lim.admit(0.0, rec, True) for _ in range(11)]
    assert results[:10] == [PASS] * 10 and results[10] == OVER_REGISTER
    # the refused REGISTER did not take an all-request token: 40 are left
    others = [lim.admit(0.0, rec, False) for _ in range(41)]
    assert others[:40] == [PASS] * 40 and others[40] == OVER_SIP
    # a second later: 5 REGISTER tokens and 20 request tokens are back
    assert [lim.admit(1.0, rec, True) for _ in range(6)] == [PASS] * 5 + [OVER_REGISTER]
    assert [lim.admit(1.0, rec, False) for _ in range(16)] == [PASS] * 15 + [OVER_SIP]


def test_source_limiter_records_expire_once_refilled_and_are_bounded() -> None:
    lim = SourceLimiter(5, 10, 20, 50, cap=3)
    assert lim.idle_ttl == 2.5  # max(10/5, 50/20)
    lim.add(0.0, "a", -1, 1)
    assert lim.record(2.0, "a") is not None
    assert lim.record(4.4, "a") is not None  # refreshed at 2.0
    assert lim.record(7.0, "a") is None
    for src in "bcdef":
        lim.add(8.0, src, -1, 1)
    assert len(lim) == 3


def test_source_limiter_lowered_limits_apply_at_once() -> None:
    lim = SourceLimiter(5, 10, 20, 50, cap=10)
    rec = lim.add(0.0, "a", -1, 1)
    lim.configure(1, 2, 1, 3)
    assert [lim.admit(0.0, rec, True) for _ in range(3)] == [PASS, PASS, OVER_REGISTER]
    assert [lim.admit(0.0, rec, False) for _ in range(2)] == [PASS, OVER_SIP]


def test_gateway_limiter_shared_bucket_and_reconfigure_keeps_tokens() -> None:
    gw = GatewayLimiter([("trunk", 3.0), ("tiny", 0.5)])
    assert [gw.take(0.0, 0) for _ in range(4)] == [True, True, True, False]
    assert [gw.take(0.0, 1) for _ in range(2)] == [True, False]  # burst max(cps, 1) = 1
    gw.configure([("new", 2.0), ("trunk", 3.0)])
    assert gw.names == ("new", "trunk")
    assert not gw.take(0.0, 1)  # "trunk" kept its (empty) bucket
    assert gw.take(0.0, 0)
