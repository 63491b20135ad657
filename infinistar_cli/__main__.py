"""`python -m infinistar_cli`: the same as the `infinistar` command."""
from infinistar_cli.main import cli

if __name__ == "__main__":
    cli(prog_name="infinistar")
