"""``emu review``: the local web app where people make the human stages' decisions."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from emu_cli.cli.options import (
    POSITIVE,
    config_option,
    run,
)


@click.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--stage",
    type=click.Choice(["generalist", "specialist", "caption", "compare"]),
    required=True,
    help="compare: DATA is an `emu evaluate --annotators review` folder.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Listen on a --host other machines reach: plain HTTP, tokens in links; use it only on "
    "a network you trust, or behind a TLS proxy.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="0 picks a free one.",
)
@click.option(
    "--num-annotators",
    "annotators",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Annotators: one link with its own token each.",
)
@click.option(
    "--export",
    "export_to",
    type=click.Path(path_type=Path),
    help="Write what the stage kept (with final captions) to this image folder; no server.",
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The annotation database (default: annotations.sqlite beside DATA; for compare, in DATA).",
)
@config_option()
def review(
    data: Path,
    stage: str,
    host: str,
    allow_remote: bool,
    port: int,
    annotators: int,
    export_to: Path | None,
    store: Path | None,
) -> None:
    """Web app for the human stages (generalist, specialist, caption) and side-by-side
    evaluation (compare), on a SQLite database shared with the simulated annotators."""
    from emu_cli.human.server import is_loopback, make_server, store_path

    database = store or store_path(data, stage)
    if export_to is not None:
        from emu_cli.human.export import export_stage

        count = run(lambda: export_stage(data, stage, export_to, database))
        click.echo(f"exported {count} images to {export_to} (decisions from {database})")
        return
    if not is_loopback(host):
        if not allow_remote:
            raise click.UsageError(
                f"refusing to listen on {host}, beyond this machine: the app speaks plain HTTP "
                "and its links carry the annotators' tokens; pass --allow-remote to do it anyway"
            )
        click.echo(
            f"warning: listening on {host}: anyone who can reach it and sees a link can vote "
            "as that annotator; use a network you trust, or a TLS proxy in front",
            err=True,
        )

    def listening():
        try:
            return make_server(
                data, stage, host=host, port=port, annotators=annotators, database=database
            )
        except OSError as error:
            if error.filename is not None:  # a file (the database), not the address
                raise
            raise ValueError(
                f"cannot listen on {host}:{port} ({error.strerror}): pass another --port "
                "(0 picks a free one)"
            ) from error

    server, tokens = run(listening)
    bound = server.effective_port
    click.echo(f"emu review ({stage}) serving {data} on http://{host}:{bound}/", err=True)
    click.echo(f"decisions are stored in {database.resolve()}", err=True)
    for name, token in tokens.items():
        click.echo(f"{name}: http://{host}:{bound}/?token={token}")
    sys.stdout.flush()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        server.app.close()
