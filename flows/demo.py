"""The demo job on embedded defaults: score generated leads, then requalify them months later.

Until the sync flows run against the sandbox CRMs, this shows what the shared scoring module does
with a realistic mix of leads: the statuses it assigns, why, and how statuses move as leads go cold.
"""

from __future__ import annotations

import argparse

import pandas as pd

from sandbox.seed import generate_leads
from scoring import load_rules, score


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=10_000, help="how many leads to generate")
    parser.add_argument("--seed", type=int, default=42, help="seed for the generated leads")
    parser.add_argument(
        "--later-days",
        type=int,
        default=90,
        help="how many days later the requalification pass runs",
    )
    args = parser.parse_args(argv)

    rules = load_rules()
    now = pd.Timestamp.now(tz="UTC").floor("s")
    leads = generate_leads(args.leads, seed=args.seed, now=now)
    first = score(leads, rules, now)
    print(f"Scored {len(leads):,} generated leads at {now:%Y-%m-%d %H:%M}Z\n")
    print(_table(first["status"].fillna("(human-owned, unset)").value_counts(), "status"))
    print("\nScore distribution")
    print(
        _table(
            pd.cut(
                first["score"],
                [-1, 19, 39, 59, 79, 100],
                labels=["0-19", "20-39", "40-59", "60-79", "80-100"],
            ).value_counts(sort=False),
            "score",
        )
    )
    print("\nExample reasons")
    for status, group in first.groupby("status"):
        print(f"  {status:<13} {group['reason'].iloc[0]}")

    later = now + pd.Timedelta(days=args.later_days)
    again = score(
        leads.assign(status=first["status"], qualified_at=first["qualified_at"]), rules, later
    )
    moved = pd.crosstab(first["status"], again["status"]).rename_axis(index="from", columns="to")
    moves = int((first["status"].fillna("") != again["status"].fillna("")).sum())
    print(
        f"\nRequalified {args.later_days} days later with no new engagement: "
        f"{moves:,} statuses moved"
    )
    print(moved.to_string())


def _table(counts: pd.Series, name: str) -> str:
    return counts.rename_axis(name).rename("leads").to_frame().to_string()


if __name__ == "__main__":
    main()
