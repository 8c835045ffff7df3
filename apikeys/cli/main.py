"""The ``apikeys`` command: every command works on a fresh instance and answers an error in one line."""

from __future__ import annotations

import click
from flask.cli import ScriptInfo

from apikeys.cli.base import DATABASE_URL_HELP
from apikeys.cli.base import SETTINGS_READER
from apikeys.cli.base import Group
from apikeys.cli.base import read_settings
from apikeys.cli.base import use_database_url
from apikeys.cli.commands import COMMANDS
from apikeys.factory import create_app
from apikeys.server.serve import serve_command


def _create_app():
    return create_app()


@click.group(cls=Group)
@click.version_option(package_name="apikeys", message="%(prog)s %(version)s")
@click.option("--database-url", metavar="URL", help=DATABASE_URL_HELP)
@click.pass_context
def main(ctx, database_url):
    """apikeys: a self-hosted API-key service. Settings come from APIKEYS_* variables (see README.md)."""
    if database_url is not None:
        use_database_url(ctx, database_url)
    if not isinstance(ctx.obj, ScriptInfo):  # Flask's test runner hands its own in
        ctx.obj = ScriptInfo(create_app=_create_app, set_debug_flag=False, load_dotenv_defaults=False)
        # For a command that must make nothing (the app would make a verifier key on a fresh instance).
        ctx.obj.data[SETTINGS_READER] = read_settings


for _command in [serve_command, *COMMANDS]:
    main.add_command(_command)
