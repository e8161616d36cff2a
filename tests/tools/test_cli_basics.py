import os
import subprocess
import sys

from click.testing import CliRunner

from edgediff import __version__
from edgediff.tools.cli import cli


def test_help_shows_the_path():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for word in ("train", "export", "sample"):
        assert word in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_python_dash_m_and_console_script_agree():
    out = subprocess.run([sys.executable, "-m", "edgediff", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and __version__ in out.stdout


def test_a_reader_that_closed_the_pipe_stops_the_command_quietly():
    """`edgediff priors progress | head -1`: the reader leaves early; no error line, exit 0 (as Unix tools)."""
    command = [sys.executable, "-m", "edgediff", "priors", "progress"]
    full = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert full.returncode == 0 and len(full.stdout.splitlines()) > 1  # the command does write a table
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command starts: its first write meets a reader that is gone
    try:
        cut = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert cut.returncode == 0, cut.stderr
    assert cut.stderr == ""
