"""What ``emu evaluate`` leaves for people: a bar chart of the win rates and an HTML page with
the tables and every pair side by side."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

PROTOCOL_TITLES = {"appeal": "visual appeal", "faithfulness": "text faithfulness"}
SHOWN_PAIRS = 200


def describe(rate: dict[str, Any]) -> str:
    """The paper's sentence for one win rate."""
    if not rate["pairs"]:
        return "no votes yet"
    return (
        f"A preferred {100 * rate['a']:.1f}%, B preferred {100 * rate['b']:.1f}%, "
        f"the rest ties ({100 * rate['tie']:.1f}%) over {rate['pairs']} pairs"
    )


def plot_win_rates(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (f"{PROTOCOL_TITLES[protocol]}\n{subset}", rate)
        for protocol, subsets in results["protocols"].items()
        for subset, rate in subsets.items()
        if rate["pairs"]
    ]
    figure, axis = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.2), dpi=100)
    colors = {"a": "#3b7dd8", "tie": "#bbbbbb", "b": "#e07b39"}
    for y, (_, rate) in enumerate(rows):
        left = 0.0
        for outcome in ("a", "tie", "b"):
            share = rate[outcome]
            axis.barh(y, share, left=left, color=colors[outcome], edgecolor="white")
            if share >= 0.06:
                axis.text(left + share / 2, y, f"{100 * share:.0f}%", ha="center", va="center")
            left += share
        low, high = rate["interval"]["a"]
        axis.plot([low, high], [y + 0.3, y + 0.3], color="black", linewidth=1)
    axis.set_yticks(range(len(rows)), [label for label, _ in rows])
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of pairs (black: 95% interval of A's share)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[o]) for o in ("a", "tie", "b")]
    axis.legend(
        handles, ["A preferred", "tie", "B preferred"], loc="lower center",
        bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False,
    )  # fmt: skip
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def comparison_grid(pairs: list[dict], out: Path, per_tag: int = 6) -> Path:
    """Up to ``per_tag`` pairs of each prompt tag (seen, unseen, ...) as two rows: A's images
    above, B's below, the same prompt and seed in each column."""
    from PIL import Image

    from emu_cli.images import save_grid

    chosen: list[dict] = []
    for tag in dict.fromkeys(t for p in pairs for t in p["tags"][:1]) or [None]:
        chosen += [p for p in pairs if tag is None or tag in p["tags"]][:per_tag]
    pictures = [Image.open(out / p[f"image_{side}"]) for side in ("a", "b") for p in chosen]
    return save_grid(pictures, out / "comparison.png", columns=len(chosen))


def write_report(results: dict[str, Any], pairs: list[dict], out: Path) -> None:
    plot_win_rates(results, out / "winrates.png")
    comparison_grid(pairs, out)
    escape = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>emu evaluate</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}figure{display:inline-block;margin:6px}"
        "img{width:128px;image-rendering:pixelated}</style>",
        "<h1>Side-by-side evaluation</h1>",
        f"<p>A: <code>{escape(results['a'])}</code><br>B: <code>{escape(results['b'])}</code>"
        f"<br>prompts: {escape(results['prompts'])}, {results['pairs']} pairs, "
        f"{results['votes']} votes ({escape(results['annotators'])} annotators)</p>",
        "<img src='winrates.png' style='width:auto'>",
        "<p>Same prompt and seed in each column; A above, B below:</p>"
        "<img src='comparison.png' style='width:auto;image-rendering:pixelated'>",
        "<table><tr><th>protocol</th><th>prompts</th><th>result</th>"
        "<th>95% interval of A</th></tr>",
    ]
    for protocol, subsets in results["protocols"].items():
        for subset, rate in subsets.items():
            interval = (
                ""
                if not rate["pairs"]
                else "{:.1f}-{:.1f}%".format(*(100 * v for v in rate["interval"]["a"]))
            )
            parts.append(
                f"<tr><td>{PROTOCOL_TITLES[protocol]}</td><td>{escape(subset)}</td>"
                f"<td>{escape(describe(rate))}</td><td>{interval}</td></tr>"
            )
    parts.append("</table><h2>Automatic proxies (means)</h2><table>")
    parts.append("<tr><th>measure</th><th>prompts</th><th>A</th><th>B</th></tr>")
    for measure, subsets in results["proxies"].items():
        for subset, sides in subsets.items():
            parts.append(
                f"<tr><td>{escape(measure)}</td><td>{escape(subset)}</td>"
                f"<td>{sides['a']:.3f}</td><td>{sides['b']:.3f}</td></tr>"
            )
    parts.append(f"</table><h2>Pairs (A left, B right; first {SHOWN_PAIRS})</h2>")
    for pair in pairs[:SHOWN_PAIRS]:
        parts.append(
            f"<figure><img src='{escape(pair['image_a'])}'><img src='{escape(pair['image_b'])}'>"
            f"<figcaption>{escape(pair['prompt'])}<br><small>{escape(' '.join(pair['tags']))}"
            "</small></figcaption></figure>"
        )
    (out / "report.html").write_text("\n".join(parts), encoding="utf-8")
