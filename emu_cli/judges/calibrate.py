"""Which judge agrees with our people: for every side-by-side pair people voted on, does the
judge prefer the image the panel's majority preferred?

The figures are those the HPS and PickScore papers report: a judge's agreement with the
majority over the pairs the majority decided (a tie is left out), and beside it the human
ceiling, each annotator's agreement with the majority of the others on the same pairs. A judge
near the ceiling is as good a stand-in as one more person; one near 50 % is a coin.
Pairs the judge scores equally (the same image on both sides) are left out and counted.
Intervals resample whole pairs (bootstrap)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu_cli.errors import EmuError
from emu_cli.evaluate.winrate import choices_by_pair, pair_outcome, win_rate
from emu_cli.files import write_atomic
from emu_cli.human.store import PROTOCOLS, AnnotationStore
from emu_cli.plugin.judge import Judge


@dataclass
class Agreement:
    share: float  # of the decided pairs (or votes, for people) the judge agreed on
    low: float
    high: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"agreement": self.share, "interval": [self.low, self.high], "count": self.count}


def agreement(hits: list[bool], groups: list[str], *, resamples: int, seed: int) -> Agreement:
    """The share of ``hits`` that are true, with a bootstrap interval over ``groups``."""
    rate = win_rate(["a" if hit else "b" for hit in hits], groups, resamples=resamples, seed=seed)
    return Agreement(rate.a, *rate.interval["a"], rate.pairs)


def human_ceiling(by_pair: dict[str, list[str]], *, resamples: int, seed: int) -> Agreement:
    """Each vote for a or b against the majority of the other votes on its pair."""
    hits, groups = [], []
    for pair, choices in by_pair.items():
        for i, choice in enumerate(choices):
            others = choices[:i] + choices[i + 1 :]
            if choice not in ("a", "b") or not others:
                continue
            majority = pair_outcome(others)
            if majority in ("a", "b"):
                hits.append(choice == majority)
                groups.append(pair)
    return agreement(hits, groups, resamples=resamples, seed=seed)


def calibrate(
    votes: Path, judges: list[Judge], *, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Agreement of each judge with the majority of people (and of people with each other) on
    the voted pairs of the store ``votes`` (an ``annotations.sqlite``, or the evaluation
    folder holding one); images are read beside the store."""
    from PIL import Image

    path = Path(votes)
    path = path / "annotations.sqlite" if path.is_dir() else path
    if not path.is_file():
        raise EmuError(f"'{votes}' is no annotation store (an annotations.sqlite file)")
    store = AnnotationStore(path)
    try:
        comparisons = store.comparisons()
        votes = store.votes()
        voted = {protocol: choices_by_pair(votes, protocol) for protocol in PROTOCOLS}
    finally:
        store.close()
    if not any(voted.values()):
        raise EmuError(f"'{path}' holds no votes: collect them with `emu review` or a panel")
    report: dict[str, Any] = {"store": str(path), "protocols": {}}
    for protocol, by_pair in voted.items():
        majority = {p: pair_outcome(c) for p, c in by_pair.items()}
        decided = sorted(p for p, outcome in majority.items() if outcome in ("a", "b"))
        entry: dict[str, Any] = {
            "pairs_voted": len(by_pair),
            "pairs_decided": len(decided),
            "people": human_ceiling(by_pair, resamples=resamples, seed=seed).to_dict(),
            "judges": {},
        }
        if decided:
            prompts = [comparisons[p]["prompt"] for p in decided]
            images = {
                side: [Image.open(path.parent / comparisons[p][f"image_{side}"]) for p in decided]
                for side in ("a", "b")
            }
            for judge in judges:
                if protocol not in judge.measures:  # a protocol is named by what it measures
                    continue
                a, b = (judge.score(images[s], prompts)[protocol] for s in ("a", "b"))
                # a judge that scores both images the same cannot tell: left out, and counted
                told = [i for i in range(len(decided)) if a[i] != b[i]]
                hits = [("a" if a[i] > b[i] else "b") == majority[decided[i]] for i in told]
                groups = [decided[i] for i in told]
                found = agreement(hits, groups, resamples=resamples, seed=seed)
                entry["judges"][judge.spec] = {
                    **found.to_dict(),
                    "cannot_tell": len(decided) - len(told),
                }
        report["protocols"][protocol] = entry
    return report


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """``calibration.json``, a Markdown table and a PNG chart of it in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "calibration.json", json.dumps(report, indent=2))
    lines = ["| protocol | who | agreement | 95 % interval | pairs (votes for people) |",
             "|---|---|---|---|---|"]  # fmt: skip
    rows = []
    for protocol, entry in report["protocols"].items():
        for who, found in [("people (ceiling)", entry["people"]), *entry["judges"].items()]:
            if found["count"]:
                low, high = found["interval"]
                lines.append(
                    f"| {protocol} | {who} | {100 * found['agreement']:.1f} % | "
                    f"{100 * low:.1f}-{100 * high:.1f} % | {found['count']} |"
                )
                rows.append((f"{protocol}: {who}", found))
    (out / "calibration.md").write_text("\n".join(lines) + "\n")
    _chart(rows, out / "calibration.png")
    return [out / "calibration.json", out / "calibration.md", out / "calibration.png"]


def _chart(rows: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.2), dpi=100)
    for i, (label, found) in enumerate(rows):
        low, high = found["interval"]
        axis.barh(i, 100 * found["agreement"], color="#4a7fb0" if "people" not in label else "#999")
        axis.plot([100 * low, 100 * high], [i, i], color="black")
    axis.set_yticks(range(len(rows)), [label for label, _ in rows])
    axis.axvline(50, color="gray", linestyle=":", label="a coin")
    axis.set_xlim(0, 100)
    axis.set_xlabel("agreement with the majority of people (%), 95 % interval")
    axis.invert_yaxis()
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
