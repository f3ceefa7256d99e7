"""The command line: one module per command, sharing the options in `options.py` and the terminal through
`output.py`, the only code that prints. Heavy imports happen inside commands, so `edgepack --help` is instant and
imports no torch.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

import click

from edgepack import __version__
from edgepack.cli.options import EXIT_CODE_HELP
from edgepack.errors import EdgepackError, one_line


class EdgepackGroup(click.Group):
    """Every failure becomes one line on stderr and the documented exit code: edgepack's own errors, click's usage
    errors (which click would print as three lines), and internal failures (traceback with EDGEPACK_DEBUG=1)."""

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"edgepack: error: {one_line(exc.format_message())}{where}", err=True)
            code = 2
        except click.ClickException as exc:
            click.echo(f"edgepack: error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except click.Abort:
            click.echo("edgepack: aborted", err=True)
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgepackError as exc:
            click.echo(f"edgepack: error: {exc}", err=True)
            if getattr(exc, "evidence", "") and os.environ.get("EDGEPACK_DEBUG"):
                click.echo(f"edgepack: native output before the failure:\n{exc.evidence}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("edgepack: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # the reader went away (`edgepack targets | head`): nothing left to say
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except Exception as exc:  # an internal failure: one line, exit 1; the traceback on request
            if os.environ.get("EDGEPACK_DEBUG"):
                raise
            click.echo(f"edgepack: internal error: {type(exc).__name__}: {one_line(exc)} "
                       f"(set EDGEPACK_DEBUG=1 for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=EdgepackGroup, epilog=EXIT_CODE_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepack")
def cli() -> None:
    """edgepack: compress, export, quantize, verify, measure and budget-gate PyTorch models for edge targets."""


def main() -> None:
    cli(prog_name="edgepack")


def _register() -> None:
    from edgepack.cli import build, check, compare, compress, distill, history, inspect, plan, targets, zoo

    for module in (build, compress, distill, check, compare, history, inspect, plan, targets, zoo):
        cli.add_command(module.command)


_register()

if __name__ == "__main__":
    main()
