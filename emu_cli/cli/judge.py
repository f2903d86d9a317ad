"""``emu judge``: how far the automatic judges agree with your own people."""

from __future__ import annotations

from pathlib import Path

import click

from emu_cli.cli.options import POSITIVE, config_option, run


@click.group()
def judge() -> None:
    """The automatic judges: what early stopping and evaluation proxies rest on."""


@judge.command()
@click.option(
    "--votes",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="An annotation store with side-by-side votes: an `emu evaluate` folder or its "
    "annotations.sqlite.",
)
@click.option(
    "--judge",
    "specs",
    multiple=True,
    required=True,
    help="A judge, NAME@SOURCE, or appeal=JUDGE,faithfulness=JUDGE; repeatable. A judge of one "
    "measure (clipscore: faithfulness) is calibrated on that one.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where calibration.json, .md and .png go [default: beside the store].",
)
@click.option(
    "--resamples", type=POSITIVE, default=1000, show_default=True, help="Bootstrap draws."
)
@config_option()
def calibrate(votes: Path, specs: tuple[str, ...], out: Path | None, resamples: int) -> None:
    """For every voted pair: does the judge prefer the image the majority of people did? Each
    judge's agreement for appeal and faithfulness, beside each annotator's agreement with the
    rest of the panel (the human ceiling), with bootstrap intervals."""
    from emu_cli.judges.calibrate import calibrate as agreement_of
    from emu_cli.judges.calibrate import write_report
    from emu_cli.plugin import registry

    judges = run(lambda: [registry.judge(spec, complete=False) for spec in specs])
    report = run(lambda: agreement_of(votes, judges, resamples=resamples))
    folder = out or (votes if votes.is_dir() else votes.parent) / "calibration"
    written = write_report(report, folder)
    click.echo((folder / "calibration.md").read_text(), nl=False)
    click.echo(f"wrote {', '.join(str(p) for p in written)}")
