"""Burrow's rules over lag samples, without any service."""

from __future__ import annotations

from suspensions.lag import GroupSample, PartitionLag, Status, evaluate, partition_status


def lag(committed: int | None, log_end: int) -> PartitionLag:
    return PartitionLag("t", 0, committed, log_end, log_end - (committed or 0), 1.0 if log_end > (committed or 0) else 0)


def test_caught_up_in_the_window_is_ok() -> None:
    assert partition_status([lag(5, 10), lag(10, 10)], active_members=1) is Status.OK


def test_falling_lag_is_ok_and_never_falling_is_warn() -> None:
    assert partition_status([lag(0, 10), lag(5, 12), lag(9, 13)], 1) is Status.OK
    assert partition_status([lag(0, 10), lag(2, 14), lag(4, 20)], 1) is Status.WARN


def test_offsets_going_back_is_rewind() -> None:
    assert partition_status([lag(8, 10), lag(3, 10)], 1) is Status.REWIND


def test_offsets_not_moving_with_lag_is_stall_or_stop() -> None:
    assert partition_status([lag(3, 10), lag(3, 12)], active_members=1) is Status.STALL
    assert partition_status([lag(3, 10), lag(3, 12)], active_members=0) is Status.STOP
    assert partition_status([lag(None, 10), lag(None, 10)], active_members=0) is Status.STOP


def test_one_sample_with_lag_is_warn() -> None:
    assert partition_status([lag(3, 10)], 1) is Status.WARN
    assert partition_status([lag(10, 10)], 1) is Status.OK


def test_a_group_takes_its_worst_partition() -> None:
    ok = PartitionLag("t", 0, 10, 10, 0, 0.0)
    stuck = PartitionLag("t", 1, 3, 10, 7, 5.0)
    samples = [GroupSample("g", 0.0, 1, (ok, stuck)), GroupSample("g", 1.0, 1, (ok, stuck))]
    report = evaluate(samples)
    assert report.status is Status.STALL and report.total_lag == 7
    assert [p["status"] for p in report.partitions] == ["OK", "STALL"]
    assert report.as_dict()["status"] == "STALL"
