"""Candidates trained at once on a CPU's cores: same search as one at a time, order kept, threads restored."""
import threading

import pandas as pd
import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from conftest import small_cfg
from planting_core.speed.parallel import candidate_threads, map_concurrently


def test_how_many_candidates_train_at_once():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert candidate_threads(None, cpu) == torch.get_num_threads()
    assert candidate_threads(3, cpu) == 3 and candidate_threads(1, cpu) == 1
    assert candidate_threads(4, cuda) == 1  # off the CPU: one at a time (or fused)


def test_a_lone_item_also_runs_single_threaded_so_a_resumed_round_computes_the_same():
    before = torch.get_num_threads()
    assert list(map_concurrently(lambda i: torch.get_num_threads(), [0], threads=4)) == [1]
    assert list(map_concurrently(lambda i: torch.get_num_threads(), [0], threads=1)) == [before]


def test_results_come_in_order_from_several_threads_and_the_thread_count_is_restored():
    before = torch.get_num_threads()
    seen_threads, names = [], set()
    both_running = threading.Barrier(2, timeout=30)  # the first two jobs wait for each other: two threads at once

    def job(i: int) -> int:
        if i < 2:
            both_running.wait()
        seen_threads.append(torch.get_num_threads())
        names.add(threading.current_thread().name)
        torch.ones(1000).sum()  # some torch work in the thread
        return i * i
    assert list(map_concurrently(job, range(6), threads=3)) == [i * i for i in range(6)]
    assert set(seen_threads) == {1} and len(names) > 1
    assert torch.get_num_threads() == before
    with pytest.raises(ZeroDivisionError):  # a job's error reaches the caller, and the threads are restored
        list(map_concurrently(lambda i: 1 // (i - 2), range(4), threads=2))
    assert torch.get_num_threads() == before


def test_a_search_with_concurrent_candidates_equals_one_at_a_time(initial, teacher, data, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per candidate either way: the same arithmetic
    try:
        alone = pc.grow(initial, teacher, data, small_cfg(max_rounds=2, candidate_threads=1), progress=False)
        together = pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=2, candidate_threads=3), tmp_path,
                                     progress=False)
    finally:
        torch.set_num_threads(before)
    cols = ["round", "layer", "widths", "params", "status"]
    pd.testing.assert_frame_equal(alone.history[cols], together.history[cols])  # same candidates, same order
    assert together.history["val_loss"].tolist() == pytest.approx(alone.history["val_loss"].tolist(), abs=1e-6)
    # a speed switch: the saved run resumes and loads with any other setting
    again = pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=2), tmp_path, progress=False)
    assert again.history["val_loss"].tolist() == together.history["val_loss"].tolist()


def test_a_bad_thread_count_is_refused_before_any_training():
    with pytest.raises(pc.PlantingError, match="candidate_threads.*an integer from 1 to 1024, or None"):
        small_cfg(candidate_threads=0).check()
