"""runtime: the thread-count chooser follows a load that comes and goes, and restores the
caller's setting."""

from __future__ import annotations

import time

import torch

from tfcseg.runtime import ThreadTuner


def _work(seq: list[int], loaded: list[bool]):
    def run() -> None:
        n = torch.get_num_threads()
        seq.append(n)
        if loaded[0]:  # another process is busy: two threads wait for each other
            time.sleep(0.010 if n == 1 else 0.080)
        else:  # idle: two threads are faster
            time.sleep(0.030 if n == 1 else 0.008)
    return run


def test_thread_tuner_follows_the_load_and_restores_the_setting():
    before = torch.get_num_threads()
    tuner = ThreadTuner(candidates=(2, 1), every=12, trial=2)
    seq, loaded = [], [False]
    run = _work(seq, loaded)
    for i in range(40):
        loaded[0] = 14 <= i < 26
        tuner.run(run)
        assert torch.get_num_threads() == before
    idle1, busy, idle2 = seq[4:14], seq[18:26], seq[34:40]
    assert seq[:2] == [2, 2] and seq[2:4] == [1, 1]  # an early trial of the other count
    assert idle1.count(2) >= 8  # idle: two threads, the faster
    assert busy.count(1) >= 6  # loaded: within two frames of the load, one thread (a periodic trial aside)
    assert seq[30:36] == [2] * 6  # the load gone: back to two within a few frames
    assert tuner.switches >= 2


def test_a_single_candidate_never_tries_others():
    tuner = ThreadTuner(candidates=(1,))
    seq = []
    for _ in range(6):
        tuner.run(_work(seq, [True]))
    assert seq == [1] * 6
