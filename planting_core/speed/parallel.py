"""Candidates trained at once on a CPU's cores, each on one thread.

A planting candidate is a small network: on a CPU, one fit spread over every core by torch's intra-op threads
leaves cores waiting between small operations. Training several candidates at once, each single-threaded (torch
releases Python's lock inside its operations), keeps every core busy instead. Each candidate's training is the
same computation as alone, so results equal one-at-a-time training up to float rounding (a convolution's sums
may be split differently with one thread than with several).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def candidate_threads(setting: int | None, device: torch.device) -> int:
    """How many candidates train at once: `setting`, else (None) on a CPU as many as torch's threads; 1 off the CPU
    (a GPU runs one computation at a time here). Whenever it is above 1, every candidate trains single-threaded,
    however few are left in a round, so that a resumed round computes what an uninterrupted one does."""
    if device.type != "cpu":
        return 1
    return torch.get_num_threads() if setting is None else setting


@contextlib.contextmanager
def single_threaded_ops() -> Iterator[None]:
    """torch's intra-op threads set to 1 for a block (restored after): each concurrent job gets one core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def map_concurrently(job: Callable[[T], R], items: list[T], threads: int) -> Iterator[R]:
    """job(item) for every item, up to `threads` at a time, each single-threaded (also a lone item); results in the
    order of `items` (each as soon as it and those before it are done). threads=1: a plain loop, torch's threads
    untouched."""
    if threads <= 1:
        yield from map(job, items)
        return
    with single_threaded_ops(), ThreadPoolExecutor(max(1, min(threads, len(items)))) as pool:
        yield from pool.map(job, items)
