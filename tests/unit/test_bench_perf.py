"""The performance benchmarks' own arithmetic (figures themselves are printed, never asserted)."""

from __future__ import annotations

import pytest

from bench.perf_common import percentile, summary
from bench.perf_enqueue import DerivedSkus


def test_summary_reports_median_and_deciles_of_repeated_runs():
    result = summary([10.0, 20.0, 30.0, 40.0, 1000.0])
    assert result["median"] == 30.0
    assert result["min"] == 10.0 and result["max"] == 1000.0 and result["n"] == 5
    assert 10.0 < result["p10"] < 20.0  # interpolated between the two lowest runs
    assert 40.0 < result["p90"] < 1000.0


def test_summary_of_a_single_run_has_no_spread():
    assert summary([7.0]) == {"median": 7.0, "p10": 7.0, "p90": 7.0, "min": 7.0, "max": 7.0, "n": 1}


@pytest.mark.parametrize(("q", "expected"), [(0, 1), (50, 51), (99, 100), (100, 101)])
def test_percentile_picks_the_nearest_rank(q, expected):
    assert percentile(list(range(101, 0, -1)), q) == expected


def test_derived_skus_are_distinct_and_sorted_like_the_database_list():
    with DerivedSkus(1000).repository() as sales:
        skus = sales.list_skus()
    assert len(set(skus)) == 1000
    assert skus == sorted(skus) and skus[0] == "DRV-00000" and skus[-1] == "DRV-00999"


def test_nightly_retrain_cost_and_time_from_cpu_per_sku():
    from bench.perf_report import PRICE_PER_GB_SECOND, nightly_retrain

    one_vcpu = nightly_retrain(10_000, 1.0, 100)
    assert one_vcpu["gb_seconds"] == 10_000 * 1769 / 1024
    assert one_vcpu["minutes"] == 10_000 * 1.0 / 100 / 60
    requests_cost = 2_000 * 0.20 / 1_000_000  # batches of 5
    assert one_vcpu["cost_usd"] == one_vcpu["gb_seconds"] * PRICE_PER_GB_SECOND + requests_cost
    # Half the memory: half a vCPU, twice the time, the same GB-s.
    half = nightly_retrain(10_000, 1.0, 100, memory_mb=1769 // 2)
    assert abs(half["gb_seconds"] - one_vcpu["gb_seconds"]) < 10
    assert half["minutes"] > 1.99 * one_vcpu["minutes"]
    # The fan-out's time adds up child by child (one invocation).
    assert nightly_retrain(10_000, 1.0, 100, fanout_s_per_child=0.003)["minutes"] == (
        pytest.approx(one_vcpu["minutes"] + 30 / 60)
    )
