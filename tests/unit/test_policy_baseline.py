"""Registration baselines per hour of the week, and /24 dominance."""

from floodguard.policy.baseline import Baseline, SubnetShare, hour_of_week, subnet_of

MONDAY_10 = 1_795_860_000.0 - (1_795_860_000 % 604800)  # some fixed instant
HOUR = 3600.0
WEEK = 7 * 24 * HOUR


def learn(base, wall, samples, **values):
    for i in range(samples):
        assert base.observe(wall + i * 60, **values) == []


def test_500_usually_5000_now_is_a_spike_and_50_is_a_drop():
    base = Baseline(min_samples=30)
    learn(base, MONDAY_10, 40, registrations=500)
    spike = base.observe(MONDAY_10 + 41 * 60, registrations=5000)
    assert [(a.metric, a.kind, a.value, a.usual) for a in spike] == [
        ("registrations", "spike", 5000, 500.0)]
    drop = base.observe(MONDAY_10 + 42 * 60, registrations=50)
    assert [a.kind for a in drop] == ["drop"]
    # anomalies are not learned as the usual
    assert base.usual(MONDAY_10, "registrations") == 500.0


def test_each_hour_of_the_week_has_its_own_usual():
    base = Baseline(min_samples=5)
    night = MONDAY_10 + 14 * HOUR
    learn(base, MONDAY_10, 10, registrations=5000)
    learn(base, night, 10, registrations=500)
    assert hour_of_week(MONDAY_10) != hour_of_week(night)
    assert base.observe(MONDAY_10 + WEEK, registrations=5000) == []
    assert base.observe(night + WEEK, registrations=5000)[0].kind == "spike"


def test_no_alarm_before_enough_samples_or_on_tiny_numbers():
    base = Baseline(min_samples=30, floor=20)
    learn(base, MONDAY_10, 29, registrations=100)
    assert base.observe(MONDAY_10 + 30 * 60, registrations=1000) == []
    small = Baseline(min_samples=3, floor=20)
    learn(small, MONDAY_10, 5, register_rate=1)
    assert small.observe(MONDAY_10 + 600, register_rate=9) == []


def test_export_restore():
    base = Baseline(min_samples=3)
    learn(base, MONDAY_10, 5, registrations=300)
    again = Baseline(min_samples=3)
    again.restore(base.export())
    assert again.usual(MONDAY_10, "registrations") == 300.0
    assert again.observe(MONDAY_10 + 999, registrations=3000)[0].kind == "spike"


def test_one_subnet_dominating_registers_or_401s():
    share = SubnetShare(window=60, share=0.5, min_total=100)
    for i in range(80):
        share.add("register", f"203.0.113.{i}")
    for i in range(40):
        share.add("register", f"198.51.{i}.7")
    assert share.check(30.0) == []  # the window is not over yet
    found = share.check(61.0)
    assert [(a.metric, a.kind) for a in found] == [("register", "subnet")]
    assert found[0].detail == "203.0.113.0/24 has 80 of 120 in 60 s"
    for i in range(200):  # spread over 200 networks: nothing dominates
        share.add("401", f"10.{i}.0.1")
    assert share.check(122.0) == []
    v6 = SubnetShare(window=1, share=0.5, min_total=10)
    for _ in range(20):
        v6.add("401", "2001:db8:1:2::9")
    assert v6.check(5.0)[0].detail.startswith("2001:db8:1::/48 has 20 of 20")


def test_subnet_of():
    assert subnet_of("192.0.2.77") == "192.0.2.0/24"
    assert subnet_of("2001:db8:1:2::9") == "2001:db8:1::/48"
