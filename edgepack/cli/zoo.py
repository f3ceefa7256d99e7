"""`edgepack zoo`: the built-in models."""

from __future__ import annotations

import click


@click.command("zoo")
def command() -> None:
    """List the built-in models (use them as --model zoo:NAME)."""
    from edgepack.cli.output import Output
    from edgepack.models import zoo

    output = Output()
    for name in zoo.names():
        e = zoo.entry(name)
        shape = "x".join(map(str, e.input_shape))
        trained = f"trained on {e.dataset}" if e.weights else "random init"
        output.result(f"zoo:{name:18s} input {shape:10s} {trained:18s} {e.description}")
