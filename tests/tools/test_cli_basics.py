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
