"""The ``emu`` command line. Thin: each command parses options and calls into the library.

Heavy modules (torch, diffusers, the models) are imported inside commands, so ``emu --help`` and
``emu backends`` answer at once.
"""

from __future__ import annotations

import json

import click

from emu_cli.cli import curate, data, evaluate, judge, publish, review, train
from emu_cli.cli.logs import show_library_notes
from emu_cli.errors import EmuError
from emu_cli.plugin import registry as plugins
from emu_cli.version import __version__


class _Commands(click.Group):
    """The top-level group: the library's errors, wherever a command raises them, become
    click's one-line error and exit code 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except EmuError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="emu")
def cli() -> None:
    """emu: pre-train, curate, quality-tune, generate and evaluate text-to-image models
    with the Emu quality-tuning recipe."""
    show_library_notes()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends(as_json: bool) -> None:
    """List installed plugins (distribution, version) and the backends, filters, judges,
    panels and prompt sets each provides."""
    infos = plugins.plugin_infos()
    descriptions = {name: b.description for name, b in plugins.get_backends().items()}
    filter_descriptions = {name: f.description for name, f in plugins.get_filters().items()}
    judge_descriptions = {name: j.description for name, j in plugins.get_judges().items()}
    panel_descriptions = {name: p.description for name, p in plugins.get_panels().items()}
    prompt_descriptions = {name: p.description for name, p in plugins.get_prompt_sets().items()}
    captioner_descriptions = {n: c.description for n, c in plugins.get_captioners().items()}
    failures = plugins.load_failures()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "plugins": [info.__dict__ for info in infos],
                    "backends": descriptions,
                    "failed": [failure.__dict__ for failure in failures],
                },
                indent=2,
            )
        )
        return
    if not infos and not failures:
        click.echo("no plugins installed")
    for info in infos:
        version = f" {info.version}" if info.version else ""
        click.echo(f"{info.name} ({info.distribution or 'registered in-process'}{version})")
        for name in info.backends:
            click.echo(f"  backend {name}: {descriptions.get(name, '')}")
        for name in info.filters:
            click.echo(f"  filter {name}: {filter_descriptions.get(name, '')}")
        for name in info.judges:
            click.echo(f"  judge {name}: {judge_descriptions.get(name, '')}")
        for name in info.panels:
            click.echo(f"  panel {name}: {panel_descriptions.get(name, '')}")
        for name in info.prompt_sets:
            click.echo(f"  prompt set builtin:{name}: {prompt_descriptions.get(name, '')}")
        for name in info.captioners:
            click.echo(f"  captioner {name}: {captioner_descriptions.get(name, '')}")
    for failure in failures:
        click.echo(f"{failure.name}: FAILED to load: {failure.error}")


for command in (
    train.pretrain,
    train.quality_tune,
    train.generate,
    data.data,
    curate.filter_group,
    evaluate.evaluate,
    judge.judge,
    review.review,
    publish.push,
):
    cli.add_command(command)


def main() -> None:
    plugins.register_commands(cli)
    cli(prog_name="emu")


if __name__ == "__main__":  # pragma: no cover
    main()
