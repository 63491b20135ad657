import subprocess
import sys

from click.testing import CliRunner

from engine import __version__
from infinistar_cli.main import cli


def test_version_flag():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "infinistar_cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "infinistar" in out.stdout.lower() or "Usage" in out.stdout
