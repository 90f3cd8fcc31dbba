"""Scoring throughput: the vectorized module against the row-by-row reference.

Run from the repository root: `.venv/bin/python -m bench.scoring [--leads N]`. Scores N generated
leads (reasons included) in chunks on a thread pool (one worker per core; numpy and Arrow release
the GIL), times the reference on a sample, and prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from sandbox.seed import generate_leads
from scoring import load_rules, score
from tests.reference import score_row

NOW = pd.Timestamp("2026-11-24T12:00:00Z")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference-sample", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    args = parser.parse_args()

    rules = load_rules()
    started = time.perf_counter()
    leads = generate_leads(args.leads, seed=1, now=NOW)
    print(f"generated {len(leads):,} leads in {time.perf_counter() - started:.1f}s")
    chunks = [leads.iloc[start : start + args.chunk] for start in range(0, len(leads), args.chunk)]

    def score_all(workers: int) -> float:
        with ThreadPoolExecutor(workers) as pool:
            started = time.perf_counter()
            results = list(pool.map(lambda chunk: score(chunk, rules, NOW), chunks))
            elapsed = time.perf_counter() - started
        assert sum(len(result) for result in results) == len(leads)
        assert all(result["reason"].notna().all() for result in results)
        return elapsed

    single = min(score_all(1) for _ in range(args.repeats))
    parallel = min(score_all(args.workers) for _ in range(args.repeats))
    print(f"vectorized, 1 thread:   {len(leads) / single:>12,.0f} leads/s ({single:.2f}s)")
    print(
        f"vectorized, {args.workers} threads:  {len(leads) / parallel:>12,.0f} leads/s "
        f"({parallel:.2f}s)"
    )

    sample = [
        {key: (None if pd.isna(value) else value) for key, value in row.items()}
        for row in leads.head(args.reference_sample).to_dict("records")
    ]
    started = time.perf_counter()
    for row in sample:
        score_row(row, rules, NOW)
    reference_rate = len(sample) / (time.perf_counter() - started)
    print(f"reference, row by row:  {reference_rate:>12,.0f} leads/s (sample of {len(sample):,})")

    leads_per_s = len(leads) / parallel
    print(
        json.dumps(
            {
                "leads": len(leads),
                "leads_per_s": round(leads_per_s),
                "single_thread_leads_per_s": round(len(leads) / single),
                "reference_leads_per_s": round(reference_rate),
                "ratio": round(leads_per_s / reference_rate, 1),
                "workers": args.workers,
                "chunk": args.chunk,
            }
        )
    )


if __name__ == "__main__":
    main()
