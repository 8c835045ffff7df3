"""What every ``apikeys`` command shares: one-line errors, the common options, JSON output, a ready database."""

from __future__ import annotations

import json
import os

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
        except errors.KeyNotFound as error:
            raise click.ClickException(key_not_found(ctx, error)) from None
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


class OneLineUsageError(click.UsageError):
    """A usage error said in one line like every other error: without click's Usage and Try lines."""

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", file=file, err=True)


def one_line(error: click.UsageError) -> click.UsageError:
    """Return ``error`` as a OneLineUsageError, with its message and exit code (2)."""
    if type(error).show is not click.UsageError.show:  # `apikeys` alone shows its help: keep that
        return error
    one = OneLineUsageError(error.format_message(), error.ctx)
    one.exit_code = error.exit_code
    return one


class Group(click.Group):
    """A group whose commands are Commands, and whose usage errors (its commands' too) are one line."""

    command_class = Command
    group_class = type  # subgroups are Groups too

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as error:
            raise one_line(error) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # a subcommand's bad option, a missing one, an unknown command
            raise one_line(error) from None


def key_not_found(ctx: click.Context, error: errors.KeyNotFound) -> str:
    """Say which key of which tenant was not found, from the command's own KEY_ID and --tenant."""
    key_id, tenant = ctx.params.get("key_id"), ctx.params.get("tenant")
    if not key_id or not tenant:
        return str(error)
    return f"No API key {''.join(map(json_escape, key_id))} for tenant {tenant}."  # escaped: it is free text


def check_tenant(ctx, param, value):
    if not tenants.is_valid(value):
        raise click.BadParameter(f"must be {tenants.RULE}.")
    return value


def check_optional_tenant(ctx, param, value):
    # An option that may be left out but follows the tenant grammar when given (a token's sub: the API refuses one
    # that breaks it, so never issue one).
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


def use_database_url(ctx: click.Context, url: str) -> None:
    """Make ``url`` this run's APIKEYS_DATABASE_URL (read with the other settings), and restore it when the run ends."""
    rule = config_module.DatabaseUrl()
    try:
        rule.read(url)
    except config_module.Refused as error:  # the URL may carry a password: never repeated
        raise click.BadParameter(f"is not usable: {error}.", param_hint="--database-url") from None
    except ValueError:
        raise click.BadParameter(f"must be {rule.describe()}.", param_hint="--database-url") from None
    before = os.environ.get("APIKEYS_DATABASE_URL")
    os.environ["APIKEYS_DATABASE_URL"] = url

    def restore() -> None:  # for a caller that runs several commands in one process (tests, scripts)
        if before is None:
            os.environ.pop("APIKEYS_DATABASE_URL", None)
        else:
            os.environ["APIKEYS_DATABASE_URL"] = before

    ctx.call_on_close(restore)


def take_database_url(ctx: click.Context, param, value: str | None) -> None:
    if value is None:
        return
    info = ctx.find_object(ScriptInfo)
    if info is None or SETTINGS_READER not in info.data:  # `flask --app app` has read its settings already
        raise click.UsageError("--database-url is an option of `apikeys`; under `flask`, set APIKEYS_DATABASE_URL.")
    use_database_url(ctx, value)


DATABASE_URL_HELP = "The database to work on in this run; beats APIKEYS_DATABASE_URL."
# On each command that uses the database, and on `apikeys` itself: both spellings a script may reach for.
database_url_option = click.option(
    "--database-url",
    metavar="URL",
    expose_value=False,
    is_eager=True,
    callback=take_database_url,
    help=DATABASE_URL_HELP,
)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
