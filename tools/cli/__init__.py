"""The ``edgediff`` command. The only place that parses options and prints.

Error convention: a user error (an :class:`EdgediffError`) prints one line to stderr and exits with
code 2, no traceback; anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from typing import Any

import click

from edgediff import __version__
from edgediff.runtime.errors import EdgediffError


def fail(message: str, code: int = 2) -> None:
    """The one error format: a single line on stderr, then exit."""
    click.echo(f"edgediff: error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


class EdgediffGroup(click.Group):
    """A click group that turns project errors and usage errors into one stderr line and exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            fail(exc.format_message() + hint)
        except click.ClickException as exc:
            fail(exc.format_message())
        except click.Abort:
            fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        # library warnings (numpy, sigmf, onnx) would print before our one line: logged instead (-v shows them)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = super().invoke(ctx)
                sys.stdout.flush()  # a closed reader shows here, inside the handlers, not at interpreter exit
                return result
            except EdgediffError as exc:
                fail(str(exc))
            except KeyboardInterrupt:
                click.echo("edgediff: interrupted", err=True)
                ctx.exit(130)
            except MemoryError:
                fail("out of memory: ask for fewer samples or frames per run")
            except BrokenPipeError:  # `edgediff ... | head`: the reader has what it wanted; like any Unix tool, stop
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                ctx.exit(0)
            except OSError as exc:  # the file system said no: a full disk, a permission, a vanished folder
                if exc.errno is None:
                    raise
                where = f"{exc.filename}: " if exc.filename else ""
                fail(f"{where}{exc.strerror or exc}; nothing was written under the output names")
            finally:
                for w in caught:
                    logging.getLogger("edgediff").info("warning: %s", w.message)


@click.group(cls=EdgediffGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgediff")
@click.option("-v", "--verbose", is_flag=True, help="Log what the tool decides (backend choice, files).")
def cli(verbose: bool) -> None:
    """edgediff: DDPM from PyTorch training to a lean edge runtime.

    \b
    The path, one command per stage:
      edgediff train --dataset rf-qpsk --out runs/qpsk
      edgediff export onnx runs/qpsk --out bundles/qpsk
      edgediff sample bundles/qpsk --n 16 --out samples.npy
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


# Each module adds its commands to `cli` when imported; they import torch, onnx or an engine only
# inside the command bodies, so `edgediff --help` stays fast and works with the runtime alone.
COMMAND_MODULES: tuple[str, ...] = ("train", "export", "sample", "verify", "bench", "plot", "reconstruct", "doctor",
                                   "priors", "priors_gpu", "evaluate", "separate", "distill", "showcase")

for _name in COMMAND_MODULES:
    importlib.import_module(f"edgediff.tools.cli.{_name}")


def main() -> None:
    cli(prog_name="edgediff")
