"""Task ids: numeric strings, time-ordered, and never repeated by one process."""

from __future__ import annotations

import threading

from apps.tasks.models import new_task_id


def test_a_burst_of_ids_from_one_process_is_unique_and_increasing():
    # 100,000 ids are made in far fewer milliseconds than that: with six random digits alone,
    # the ids of one millisecond would meet (a birthday collision) many times over.
    ids = [new_task_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    numbers = [int(i) for i in ids]
    assert numbers == sorted(numbers)
    assert all(i.isdigit() and 19 <= len(i) <= 20 for i in ids[:100])


def test_ids_made_on_several_threads_never_repeat():
    made: list[list[str]] = [[] for _ in range(4)]

    def make(bucket: list[str]) -> None:
        bucket.extend(new_task_id() for _ in range(20_000))

    threads = [threading.Thread(target=make, args=(bucket,)) for bucket in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for bucket in made for i in bucket]
    assert len(set(every)) == len(every)
