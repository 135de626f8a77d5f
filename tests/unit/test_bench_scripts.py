"""What `itg bench` runs: every benchmark script in bench/, and nothing else."""

from __future__ import annotations

from services.benchmarks import BENCH, available


def test_itg_bench_runs_the_benchmarks_and_not_their_helpers() -> None:
    found = available()
    assert {"matcher_core", "matcher_service", "gateway", "dbwriter", "soak"} <= set(found)
    assert not {"reference_server", "workload", "leanhttp", "checks"} & set(found)
    for name in found:  # each takes --quick and prints a RESULT line
        text = (BENCH / f"{name}.py").read_text()
        assert '"--quick"' in text and '"RESULT ' in text, name
