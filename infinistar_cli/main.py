"""Click entry point. Commands stay thin: they validate, build a request and render events."""
import click

from engine import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="infinistar")
def cli() -> None:
    """Run InfinityStar text/image-to-video generation locally."""
