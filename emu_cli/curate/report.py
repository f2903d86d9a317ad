"""The report of a filter run: counts per stage (JSON, Markdown, a funnel PNG) and an HTML page
with sampled rejects for each reason, so a person can see what each filter throws away."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from emu_cli.data.sources import Sample

REPORT = "report"
SAMPLES_PER_REASON = 12


def funnel(table: pd.DataFrame, filter_names: list[str]) -> list[tuple[str, int]]:
    """Samples remaining after each stage, from the whole pool to the kept set."""
    remaining = len(table)
    stages = [("pool", remaining)]
    for name in ["input", *filter_names]:
        remaining -= int((table["reason"] == name).sum())
        stages.append((name, remaining))
    return stages


def _plot_funnel(stages: list[tuple[str, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _ in stages]
    counts = [count for _, count in stages]
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(stages) + 1))
    bars = axes.barh(range(len(stages)), counts, color="#4c72b0")
    axes.set_yticks(range(len(stages)), ["pool" if n == "pool" else f"after {n}" for n in names])
    axes.invert_yaxis()
    for bar, count in zip(bars, counts, strict=True):
        share = count / counts[0] if counts[0] else 0
        axes.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {count} ({share:.1%})",
            va="center",
            fontsize=9,
        )
    axes.set_xlim(0, max(counts) * 1.25 if max(counts) else 1)
    axes.set_xlabel("samples remaining")
    axes.set_title("emu filter: samples remaining after each stage")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _thumbnail(sample: Sample | None) -> str | None:
    from emu_cli.data.dataset import read_image

    if sample is None:
        return None
    try:
        image = read_image(sample)
    except Exception:  # unreadable images are shown by their reason alone
        return None
    image.thumbnail((128, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def _html(table: pd.DataFrame, stages: list[tuple[str, int]], by_key: dict[str, Sample]) -> str:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>emu filter report</title>",
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;width:150px;"
        "margin:4px;vertical-align:top;font-size:11px}img{width:128px;height:128px;"
        "object-fit:contain;background:#eee}td,th{padding:2px 10px;text-align:right}</style>",
        "<h1>emu filter report</h1><img src='funnel.png' style='width:auto;height:auto'>",
        "<table><tr><th>stage</th><th>remaining</th><th>rejected here</th></tr>",
    ]
    previous = stages[0][1]
    for name, count in stages:
        parts.append(
            f"<tr><td>{html.escape(name)}</td><td>{count}</td><td>{previous - count}</td></tr>"
        )
        previous = count
    parts.append("</table>")
    for reason, group in table[table["reason"].notna()].groupby("reason", sort=False):
        shown = group.sample(min(SAMPLES_PER_REASON, len(group)), random_state=0)
        parts.append(f"<h2>{html.escape(str(reason))}: {len(group)} rejected</h2>")
        for row in shown.to_dict("records"):
            thumbnail = _thumbnail(by_key.get(row["key"]))
            picture = f"<img src='data:image/jpeg;base64,{thumbnail}'>" if thumbnail else ""
            parts.append(
                f"<figure>{picture}<figcaption><b>{html.escape(str(row['key']))}</b><br>"
                f"{html.escape(str(row['detail']))}<br><i>{html.escape(str(row['caption']))}</i>"
                "</figcaption></figure>"
            )
    return "\n".join(parts)


def write_report(
    table: pd.DataFrame,
    filter_names: list[str],
    by_key: dict[str, Sample],
    out: Path,
    summary: dict[str, Any],
) -> Path:
    folder = Path(out) / REPORT
    folder.mkdir(parents=True, exist_ok=True)
    stages = funnel(table, filter_names)
    (folder / "summary.json").write_text(json.dumps({**summary, "funnel": dict(stages)}, indent=2))
    lines = ["| stage | remaining | rejected here |", "|---|---|---|"]
    previous = stages[0][1]
    for name, count in stages:
        lines.append(f"| {name} | {count} | {previous - count} |")
        previous = count
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    _plot_funnel(stages, folder / "funnel.png")
    (folder / "index.html").write_text(_html(table, stages, by_key), encoding="utf-8")
    return folder
