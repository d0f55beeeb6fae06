"""The background Event recorder: order, flush, a bounded queue, stop."""

from __future__ import annotations

import threading

from engine.kube.recorder import BackgroundRecorder


def test_items_are_posted_in_order_and_flush_waits_for_them():
    posted: list[int] = []
    recorder = BackgroundRecorder(posted.append)
    for i in range(100):
        recorder.record(i)
    assert recorder.flush(timeout=10)
    assert posted == list(range(100))
    recorder.stop()


def test_record_never_blocks_and_drops_beyond_capacity():
    release = threading.Event()
    posted: list[int] = []

    def slow(item: int) -> None:
        release.wait(10)
        posted.append(item)

    recorder = BackgroundRecorder(slow, capacity=3)
    recorder.record(0)  # taken by the thread, which then waits
    assert not recorder.flush(timeout=0.05), "a flush ends at its timeout"
    for i in range(1, 10):
        recorder.record(i)  # three fit in the queue, whether or not 0 was taken yet

    assert recorder.dropped >= 5
    release.set()
    assert recorder.flush(timeout=10)
    assert posted[0] == 0 and posted == sorted(posted) and len(posted) == 10 - recorder.dropped


def test_a_failing_post_does_not_end_the_thread():
    posted: list[int] = []

    def post(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        posted.append(item)

    recorder = BackgroundRecorder(post)
    for i in range(3):
        recorder.record(i)
    assert recorder.flush(timeout=10)
    assert posted == [0, 2]
    recorder.stop()


def test_stop_posts_what_is_queued_then_ignores_later_items():
    posted: list[int] = []
    recorder = BackgroundRecorder(posted.append)
    for i in range(5):
        recorder.record(i)
    recorder.stop(timeout=10)
    recorder.record(99)
    assert posted == [0, 1, 2, 3, 4]
    assert recorder.flush(timeout=1)


def test_drops_are_counted_in_all_and_logged_once_per_burst(caplog):
    posting, release = threading.Event(), threading.Event()

    def post(_item: object) -> None:
        posting.set()
        release.wait(10)

    recorder = BackgroundRecorder(post, capacity=1)
    with caplog.at_level("WARNING", logger="dklb.kube"):
        recorder.record(0)
        # The poster holds Event 0 and the queue is empty: exactly one more fits, the next 8 do
        # not, however slowly the poster thread got going.
        assert posting.wait(10)
        for i in range(1, 10):
            recorder.record(i)
        release.set()
        assert recorder.flush(timeout=10)
        recorder.record(10)
        assert recorder.flush(timeout=10)
    messages = [r.getMessage() for r in caplog.records]
    assert recorder.dropped == 8
    assert messages[0].startswith("the API server falls behind on Events")
    assert messages[1] == f"{recorder.dropped} Events were dropped while the API server fell behind"
    assert len(messages) == 2
