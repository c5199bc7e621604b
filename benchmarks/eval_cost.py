"""What sample-quality scoring costs, against what training costs: the eval window's joules
over the warm-up and train windows' joules, per point of ``benchmarks/eval_cost.yaml``
(20 epochs on digits, scored at the end; target: under 15 %).

    python benchmarks/eval_cost.py        # writes reports/eval-cost.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: this checkout

from benchmarks.sweep_runs import ROOT, describe_machine, eval_share, run, training_j

SWEEP = ROOT / "benchmarks" / "eval_cost.yaml"
REPORT = ROOT / "reports" / "eval-cost.md"
TARGET = 0.15


def main() -> int:
    _, records = run(SWEEP)
    shares = [eval_share(r) for r in records]
    lines = [
        "# Scoring cost against training cost",
        "",
        "Energy of the `eval` window (1,000 samples scored in the pinned extractor's feature "
        "space: KID, FID, precision/recall, density/coverage, memorisation; for the VAE also "
        "the test-set ELBO, the importance-weighted NLL with 16 samples and the reconstruction "
        "MSE) over the energy of the `warmup` and `train` windows, for 20-epoch points on "
        f"16x16 digits scored once at the end. Largest share: **{max(shares):.1%}** (target: "
        f"under {TARGET:.0%}, {'met' if max(shares) < TARGET else 'NOT met'}).",
        "",
        "| model | width | training J | eval J | eval / training | eval s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for record, share in zip(records, shares, strict=True):
        c, w = record["config"], record["energy"]["windows"]
        lines.append(
            f"| {c['model']} | {c['width']:g} | {training_j(record):.1f} | "
            f"{w['eval']['total_j']:.2f} | {share:.1%} | {w['eval']['duration_s']:.2f} |"
        )
    lines += [
        "",
        "Joules are CodeCarbon's CPU-load and RAM estimates on this machine (no GPU, no RAPL); "
        "the ratio is what they say, not a hardware measurement.",
        "",
        describe_machine(),
        "",
    ]
    REPORT.write_text("\n".join(lines))
    print(f"wrote {REPORT.relative_to(ROOT)}: largest eval share {max(shares):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
