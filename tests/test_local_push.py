"""The reference mesh's push timing (cluster/local/push.py): changes wait for a quiet period, as istiod's
debounce (PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX) holds them, and changes of one burst go out together.

Only lower bounds on time are asserted (a push never comes early); a loaded machine can only make it later.
"""

import threading
import time

import pytest

from cluster.local.push import Debouncer


class Pushes:
    def __init__(self):
        self.log: list[tuple[float, object, object]] = []
        self.lock = threading.Lock()

    def __call__(self, key, change):
        with self.lock:
            self.log.append((time.monotonic(), key, change))


def in_background(debouncer: Debouncer, key, change, head_start_s: float) -> threading.Thread:
    """deliver() from another thread, which gets `head_start_s` to queue its change first."""
    thread = threading.Thread(target=debouncer.deliver, args=(key, change))
    thread.start()
    time.sleep(head_start_s)
    return thread


def test_without_a_delay_a_change_is_pushed_before_deliver_returns():
    pushes = Pushes()
    Debouncer(pushes, after_s=0).deliver("pair0", "v1")
    assert [(k, c) for _, k, c in pushes.log] == [("pair0", "v1")]


def test_a_change_waits_for_the_quiet_period():
    pushes = Pushes()
    started = time.monotonic()
    Debouncer(pushes, after_s=0.3).deliver("pair0", "v1")
    assert len(pushes.log) == 1
    assert pushes.log[0][0] - started >= 0.3


def test_changes_within_the_quiet_period_join_one_push_and_the_latest_wins():
    pushes = Pushes()
    debouncer = Debouncer(pushes, after_s=0.4)
    first = in_background(debouncer, "pair0", "v1", 0.1)
    second_started = time.monotonic()
    debouncer.deliver("pair1", "w1")  # restarts the quiet period for the whole burst
    debouncer.deliver("pair0", "v2")  # a new burst: pushed on its own, after its own quiet period
    first.join()
    keys = [(k, c) for _, k, c in pushes.log]
    assert keys == [("pair0", "v1"), ("pair1", "w1"), ("pair0", "v2")]
    assert pushes.log[0][0] - second_started >= 0.4  # the first change waited for the later one


def test_a_later_change_to_the_same_pair_replaces_the_pending_one():
    pushes = Pushes()
    debouncer = Debouncer(pushes, after_s=0.3)
    first = in_background(debouncer, "pair0", "v1", 0.05)
    debouncer.deliver("pair0", "v2")
    first.join()
    assert [(k, c) for _, k, c in pushes.log] == [("pair0", "v2")]


def test_changes_that_never_stop_are_pushed_after_the_maximum():
    """A new change every 50 ms keeps the 0.3 s quiet period from ever passing: only the maximum (0.6 s)
    ends the burst, so the first change goes out while later ones are still coming."""
    pushes = Pushes()
    debouncer = Debouncer(pushes, after_s=0.3, max_s=0.6)
    churn = []
    first = in_background(debouncer, "pair0", "v1", 0)
    for i in range(40):
        last_change = time.monotonic()
        thread = threading.Thread(target=debouncer.deliver, args=(f"other{i}", "x"))
        thread.start()
        churn.append(thread)
        time.sleep(0.05)
    for thread in [first, *churn]:
        thread.join()
    pushed = next(when for when, key, _ in pushes.log if key == "pair0")
    assert pushed < last_change  # without the maximum it would wait for the last change's quiet period


def test_a_failed_push_is_raised_to_the_caller_whose_change_it_was():
    def push(key, change):
        if key == "bad":
            raise RuntimeError("envoy refused config")

    debouncer = Debouncer(push, after_s=0.2)
    outcome = {}

    def deliver(key):
        try:
            debouncer.deliver(key, "v")
            outcome[key] = "pushed"
        except RuntimeError as err:
            outcome[key] = str(err)

    threads = [threading.Thread(target=deliver, args=(k,)) for k in ("good", "bad")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcome == {"good": "pushed", "bad": "envoy refused config"}


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_a_negative_delay_is_refused(bad):
    with pytest.raises(ValueError, match="allowed 0 or more seconds"):
        Debouncer(lambda k, c: None, after_s=bad)
