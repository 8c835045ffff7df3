"""What every ``apikeys`` command shares: one-line errors, the common options, JSON output, a ready database."""

from __future__ import annotations

import json

import click
import sqlalchemy as sa
from flask import Config
from flask import current_app
from flask.cli import ScriptInfo

from apikeys import config as config_module
from apikeys import errors
from apikeys import keys
from apikeys import tenants
from apikeys.config import ConfigError
from apikeys.dashboard import operations
from apikeys.storage import engine as engine_module
from apikeys.verification import extension
from apikeys.verification.extension import get_state

ACTOR = operations.CLI_ACTOR
SETTINGS_READER = "apikeys.read_settings"  # the key, in a ScriptInfo's data, of a way to read settings without an app


class Command(click.Command):
    """A command whose expected errors (bad input, settings, an unreachable database) are one line, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (errors.ApiKeysError, ConfigError, RuntimeError) as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:  # the instance folder or a SQLite path cannot be made, say
            where = f": {error.filename}" if error.filename else ""
            raise click.ClickException(f"{error.strerror or error}{where}") from None
        except sa.exc.DBAPIError as error:
            # A database that is missing, does not answer, or refuses this role: what to do, in one line.
            url = engine_module.database_url(current_app.config, current_app.instance_path)
            message = engine_module.explain_error(error, url)
            if message is None:  # a fault of ours keeps its traceback
                raise
            raise click.ClickException(message) from None


class Group(click.Group):
    """A group whose commands are Commands."""

    command_class = Command
    group_class = type  # subgroups are Groups too


def check_tenant(ctx, param, value):
    if not tenants.is_valid(value):
        raise click.BadParameter(f"must be {tenants.RULE}.")
    return value


def check_actor(ctx, param, value):
    # The API refuses a token whose sub breaks the tenant grammar: never issue one.
    if value is not None and not tenants.is_valid(value):
        raise click.BadParameter(f"must be {tenants.RULE}.")
    return value


environment_option = click.option(
    "--environment", required=True, type=click.Choice(keys.ENVIRONMENTS), help="live or test."
)
tenant_option = click.option("--tenant", required=True, callback=check_tenant, help="The tenant the keys belong to.")
key_id_argument = click.argument("key_id")


def json_escape(char: str) -> str:
    if char.isprintable() or char == "\n":  # the newlines are json.dumps(indent=...)'s own
        return char
    code = ord(char)
    if code > 0xFFFF:  # JSON spells it as a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def echo_json(value) -> None:
    # Readable Unicode, but a name with a bidi override or another invisible character
    # cannot rearrange the terminal: non-printable characters stay \u escapes.
    text = json.dumps(value, indent=2, ensure_ascii=False)
    click.echo("".join(map(json_escape, text)))


def ready_state():
    """Return the app's state with its database created or upgraded, as gunicorn does at start."""
    extension.prepare(current_app)
    return get_state()


def read_settings() -> tuple[Config, str]:
    """Return the service's checked settings and instance folder as create_app reads them, without making anything."""
    settings = Config(config_module.instance_path())
    config_module.load(settings)
    return settings, settings.root_path


def service_settings(ctx: click.Context) -> tuple[Config, str]:
    """Return the settings and instance folder of the service a command works on: read afresh where we can."""
    info = ctx.ensure_object(ScriptInfo)
    reader = info.data.get(SETTINGS_READER)
    if reader is not None:
        return reader()
    app = info.load_app()  # `flask --app app` and Flask's test runner: the app exists already
    return app.config, app.instance_path


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
