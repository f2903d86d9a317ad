"""What ``emu evaluate`` leaves for people: a bar chart of the win rates and an HTML page with
the tables and every pair side by side."""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

from emu_cli.evaluate.winrate import choices_by_pair, outcomes
from emu_cli.human.store import Vote

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


def plot_win_rates(results: dict[str, Any], path: Path, names: dict[str, str]) -> None:
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
    axis.set_xlabel(f"share of pairs (black: 95% interval of {names['a']}'s share)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[o]) for o in ("a", "tie", "b")]
    axis.legend(
        handles, [f"{names['a']} (A) preferred", "tie", f"{names['b']} (B) preferred"],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False,
    )  # fmt: skip
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def model_label(name: str) -> str:
    """A model's short name for pictures: a folder's last part, or a Hub repo's name."""
    return Path(name.split("@")[0].rstrip("/")).name or name


def comparison_grid(pairs: list[dict], out: Path, names: dict[str, str], per_tag: int = 6) -> Path:
    """Up to ``per_tag`` pairs of each prompt tag (seen, unseen, ...) as two rows: A's images
    above, B's below, the same prompt and seed in each column, each captioned with its
    model's name (``names``) and prompt."""
    from PIL import Image

    from emu_cli.images import save_grid

    chosen: list[dict] = []
    for tag in dict.fromkeys(t for p in pairs for t in p["tags"][:1]) or [None]:
        chosen += [p for p in pairs if tag is None or tag in p["tags"]][:per_tag]
    sides = [("a", p) for p in chosen] + [("b", p) for p in chosen]
    pictures = [Image.open(out / p[f"image_{side}"]) for side, p in sides]
    captions = [f"{side.upper()} {names[side]}: {p['prompt']}" for side, p in sides]
    return save_grid(pictures, out / "comparison.png", columns=len(chosen), captions=captions)


def _votes_line(choices: list[str], names: dict[str, str]) -> str:
    counts = Counter(choices)
    return ", ".join(
        f"{names.get(choice, choice)} {count}" for choice, count in sorted(counts.items())
    )


def _verdict(outcome: str | None, names: dict[str, str]) -> str:
    if outcome is None:
        return "no votes yet"
    return "tie" if outcome == "tie" else f"{names[outcome]} preferred"


def write_report(results: dict[str, Any], pairs: list[dict], out: Path, votes: list[Vote]) -> None:
    """``report.html``, ``winrates.png`` and ``comparison.png`` in ``out``; ``votes`` give
    each pair its verdict and its annotators' choices."""
    names = {side: model_label(results[side]) for side in ("a", "b")}
    plot_win_rates(results, out / "winrates.png", names)
    comparison_grid(pairs, out, names)
    escape = html.escape
    verdicts = {
        protocol: (outcomes(votes, protocol), choices_by_pair(votes, protocol))
        for protocol in PROTOCOL_TITLES
    }
    title = f"{names['a']} (A) against {names['b']} (B)"
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>emu evaluate: {escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}figure{display:inline-block;margin:8px;"
        "width:540px;vertical-align:top}figure img{width:256px;height:256px;"
        "image-rendering:pixelated}.a{color:#3b7dd8}.b{color:#e07b39}</style>",
        f"<h1>Side-by-side evaluation: <span class='a'>{escape(names['a'])}</span> against "
        f"<span class='b'>{escape(names['b'])}</span></h1>",
        f"<p>A: <code>{escape(results['a'])}</code><br>B: <code>{escape(results['b'])}</code>"
        f"<br>prompts: {escape(results['prompts'])}, {results['pairs']} pairs, "
        f"{results['votes']} votes ({escape(results['annotators'])} annotators)</p>",
        "<img src='winrates.png' style='width:auto'>",
        f"<p>Same prompt and seed in each column; {escape(names['a'])} (A) above, "
        f"{escape(names['b'])} (B) below:</p>"
        "<img src='comparison.png' style='width:auto;max-width:100%'>",
    ]
    for protocol, subsets in results["protocols"].items():
        parts.append(
            f"<h2>{PROTOCOL_TITLES[protocol].capitalize()}, by prompt tag</h2><table>"
            f"<tr><th>prompts</th><th>pairs</th><th>{escape(names['a'])} preferred</th>"
            f"<th>{escape(names['b'])} preferred</th><th>ties</th>"
            f"<th>95% interval of {escape(names['a'])}</th></tr>"
        )
        for subset, rate in subsets.items():
            if not rate["pairs"]:
                parts.append(f"<tr><td>{escape(subset)}</td><td>0</td><td colspan=4>no votes "
                             "yet</td></tr>")  # fmt: skip
                continue
            low, high = (100 * v for v in rate["interval"]["a"])
            parts.append(
                f"<tr><td>{escape(subset)}</td><td>{rate['pairs']}</td>"
                f"<td>{100 * rate['a']:.1f}%</td><td>{100 * rate['b']:.1f}%</td>"
                f"<td>{100 * rate['tie']:.1f}%</td><td>{low:.1f}-{high:.1f}%</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Automatic proxies (means)</h2><table>")
    parts.append(
        f"<tr><th>measure</th><th>prompts</th><th>{escape(names['a'])}</th>"
        f"<th>{escape(names['b'])}</th></tr>"
    )
    for measure, subsets in results["proxies"].items():
        for subset, sides in subsets.items():
            parts.append(
                f"<tr><td>{escape(measure)}</td><td>{escape(subset)}</td>"
                f"<td>{sides['a']:.3f}</td><td>{sides['b']:.3f}</td></tr>"
            )
    parts.append(
        f"</table><h2>Pairs ({escape(names['a'])} left, {escape(names['b'])} right; "
        f"first {SHOWN_PAIRS})</h2>"
    )
    sides = {**names, "tie": "tie", "both": "both", "neither": "neither"}
    for pair in pairs[:SHOWN_PAIRS]:
        lines = []
        for protocol, (decided, choices) in verdicts.items():
            votes_of = choices.get(pair["id"], [])
            detail = f" ({escape(_votes_line(votes_of, sides))})" if votes_of else ""
            verdict = _verdict(decided.get(pair["id"]), names)
            lines.append(
                f"{PROTOCOL_TITLES[protocol]}: <b class='verdict'>{escape(verdict)}</b>{detail}"
            )
        parts.append(
            f"<figure data-pair='{escape(pair['id'])}'><img src='{escape(pair['image_a'])}'> "
            f"<img src='{escape(pair['image_b'])}'><figcaption>{escape(pair['prompt'])}<br>"
            f"<small>{escape(' '.join(pair['tags']))}</small><br>{'<br>'.join(lines)}"
            "</figcaption></figure>"
        )
    (out / "report.html").write_text("\n".join(parts), encoding="utf-8")
