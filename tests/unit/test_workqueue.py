"""The work queue keeps client-go's promises: dedupe, one worker per key, no lost event.

Proves that a key queued twice is handed out once; that a key added while a worker holds it is
handed out again exactly once after ``done`` (and not before); that under concurrent workers
no key is ever held by two of them and every add is followed by a processing that started
after it; that ``close`` wakes getters blocked without a timeout; and what ``idle`` reports.
Threads synchronise on Events and joins with deadlines, never on sleeps.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import pytest

from engine.runtime.workqueue import WorkQueue

DEADLINE = 10.0


def drain(queue: WorkQueue) -> list[str]:
    """Every key currently handed out, in order, each marked done (a single-threaded worker)."""
    keys: list[str] = []
    while (key := queue.get(timeout=0)) is not None:
        keys.append(key)
        queue.done(key)
    return keys


ADDS: list[tuple[str, list[str], list[str]]] = [
    ("single", ["a"], ["a"]),
    ("repeated-key-once", ["a", "a", "a"], ["a"]),
    ("fifo-order", ["b", "a", "c"], ["b", "a", "c"]),
    ("interleaved-duplicates", ["a", "b", "a", "c", "b"], ["a", "b", "c"]),
]


@pytest.mark.parametrize(("adds", "handed_out"), [(a, h) for _, a, h in ADDS], ids=[i for i, _, _ in ADDS])
def test_queued_keys_are_deduplicated_in_first_add_order(adds: list[str], handed_out: list[str]) -> None:
    queue = WorkQueue()
    for key in adds:
        queue.add(key)
    assert len(queue) == len(handed_out)
    assert drain(queue) == handed_out
    assert queue.idle()


def test_a_key_added_while_processing_is_handed_out_again_after_done_exactly_once() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0, "a key being processed is not queued beside itself"
    assert queue.get(timeout=0.05) is None, "the held key is not handed to a second worker"
    queue.done("a")
    assert len(queue) == 1
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    assert queue.get(timeout=0) is None, "the dirty mark is consumed: no third hand-out"
    assert queue.idle()


def test_other_keys_proceed_while_one_is_held() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.add("b")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    assert queue.get(timeout=0) == "b"
    queue.done("b")
    assert queue.get(timeout=0) is None
    queue.done("a")
    assert drain(queue) == ["a"]


def test_done_without_a_dirty_mark_does_not_requeue() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    assert len(queue) == 0
    assert queue.get(timeout=0) is None


def test_get_times_out_on_an_empty_queue() -> None:
    queue = WorkQueue()
    assert queue.get(timeout=0.05) is None
    assert queue.idle()


def test_a_second_worker_blocked_on_a_held_key_gets_it_once_the_first_is_done() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")  # dirty
    got: list[str | None] = []
    waiting = threading.Event()

    def second_worker() -> None:
        waiting.set()
        got.append(queue.get(timeout=DEADLINE))

    thread = threading.Thread(target=second_worker)
    thread.start()
    assert waiting.wait(DEADLINE)
    assert got == [], "nothing to hand out while the first worker holds the key"
    queue.done("a")
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert got == ["a"]


def test_concurrent_workers_never_hold_the_same_key_and_lose_no_add() -> None:
    queue = WorkQueue()
    keys = [f"ns/k{i}" for i in range(4)]
    stamp = itertools.count()
    stamp_lock = threading.Lock()
    held: set[str] = set()
    held_lock = threading.Lock()
    violations: list[str] = []
    last_add: dict[str, int] = {}
    last_start: dict[str, int] = {}
    processed: Counter[str] = Counter()

    def next_stamp() -> int:
        with stamp_lock:
            return next(stamp)

    def worker() -> None:
        while (key := queue.get(timeout=DEADLINE)) is not None:
            started = next_stamp()
            with held_lock:
                if key in held:
                    violations.append(key)
                held.add(key)
                last_start[key] = max(last_start.get(key, -1), started)
                processed[key] += 1
            # Give the other threads a chance to add and get while this key is held.
            threading.Event().wait(0.0005)
            with held_lock:
                held.discard(key)
            queue.done(key)

    def producer(offset: int) -> None:
        for i in range(400):
            key = keys[(i + offset) % len(keys)]
            # Stamped before the add: the processing that honours it starts after this stamp.
            s = next_stamp()
            with held_lock:
                last_add[key] = max(last_add.get(key, -1), s)
            queue.add(key)

    workers = [threading.Thread(target=worker, name=f"w{i}") for i in range(4)]
    producers = [threading.Thread(target=producer, args=(i,), name=f"p{i}") for i in range(3)]
    for t in workers + producers:
        t.start()
    for t in producers:
        t.join(DEADLINE)
        assert not t.is_alive()
    idle = threading.Event()
    for _ in range(int(DEADLINE / 0.02)):
        if queue.idle():
            idle.set()
            break
        threading.Event().wait(0.02)
    assert idle.is_set(), "the workers drained the queue"
    queue.close()
    for t in workers:
        t.join(DEADLINE)
        assert not t.is_alive()

    assert violations == [], f"keys held by two workers at once: {violations}"
    assert set(processed) == set(keys)
    assert sum(processed.values()) <= 1200, "dedupe: never more hand-outs than adds"
    for key in keys:
        assert last_start[key] > last_add[key], f"the last add of {key} was followed by a processing"


def test_close_wakes_getters_blocked_without_timeout() -> None:
    queue = WorkQueue()
    results: list[str | None] = []
    entered = [threading.Event() for _ in range(3)]

    def getter(ready: threading.Event) -> None:
        ready.set()
        results.append(queue.get())

    threads = [threading.Thread(target=getter, args=(e,)) for e in entered]
    for t in threads:
        t.start()
    for e in entered:
        assert e.wait(DEADLINE)
    queue.close()
    for t in threads:
        t.join(DEADLINE)
        assert not t.is_alive(), "close woke the blocked getter"
    assert results == [None, None, None]


def test_a_closed_queue_ignores_adds_and_hands_out_nothing() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.close()
    queue.add("b")
    assert queue.get(timeout=0) is None
    assert queue.get() is None, "no blocking once closed"


def test_a_dirty_key_is_not_requeued_after_close() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    queue.close()
    queue.done("a")
    assert len(queue) == 0


IDLE: list[tuple[str, list[str], bool]] = [
    ("empty", [], True),
    ("queued", ["add a"], False),
    ("processing", ["add a", "get"], False),
    ("processing-dirty", ["add a", "get", "add a"], False),
    ("done", ["add a", "get", "done a"], True),
    ("dirty-requeued-after-done", ["add a", "get", "add a", "done a"], False),
]


@pytest.mark.parametrize(("steps", "idle"), [(s, i) for _, s, i in IDLE], ids=[n for n, _, _ in IDLE])
def test_idle_means_nothing_queued_and_nothing_processing(steps: list[str], idle: bool) -> None:
    queue = WorkQueue()
    for step in steps:
        verb, _, key = step.partition(" ")
        if verb == "add":
            queue.add(key)
        elif verb == "get":
            assert queue.get(timeout=0) is not None
        else:
            queue.done(key)
    assert queue.idle() is idle
