"""The ``apikeys`` command line: every command works on a fresh instance and answers an error in one line."""

from __future__ import annotations

import json

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import ScriptInfo
from flask.cli import with_appcontext

from apikeys import db
from apikeys import errors
from apikeys import keys
from apikeys import operations
from apikeys import store
from apikeys import tenants
from apikeys import tokens
from apikeys.config import ConfigError
from apikeys.serve import serve_command
from apikeys.verify import get_state

ACTOR = operations.CLI_ACTOR


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
        except sa.exc.OperationalError as error:
            where = sa.make_url(db.database_url(current_app)).render_as_string(hide_password=True)
            problem = type(error.orig).__name__
            raise click.ClickException(f"The database at {where} does not answer ({problem}).") from None


class Group(click.Group):
    """A group whose commands are Commands."""

    command_class = Command
    group_class = type  # subgroups are Groups too


def _tenant(ctx, param, value):
    if not tenants.is_valid(value):
        raise click.BadParameter(f"must be {tenants.RULE}.")
    return value


def _actor(ctx, param, value):
    # The API refuses a token whose sub breaks the tenant grammar: never issue one.
    if value is not None and not tenants.is_valid(value):
        raise click.BadParameter(f"must be {tenants.RULE}.")
    return value


environment_option = click.option(
    "--environment", required=True, type=click.Choice(keys.ENVIRONMENTS), help="live or test."
)
tenant_option = click.option("--tenant", required=True, callback=_tenant, help="The tenant the keys belong to.")
key_id_argument = click.argument("key_id")


def _json_escape(char: str) -> str:
    if char.isprintable() or char == "\n":  # the newlines are json.dumps(indent=...)'s own
        return char
    code = ord(char)
    if code > 0xFFFF:  # JSON spells it as a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _echo_json(value) -> None:
    # Readable Unicode, but a name with a bidi override or another invisible character
    # cannot rearrange the terminal: non-printable characters stay \u escapes.
    text = json.dumps(value, indent=2, ensure_ascii=False)
    click.echo("".join(map(_json_escape, text)))


def _ready_state():
    """Return the app's state with its database created or upgraded, as gunicorn does at start."""
    db.prepare(current_app)
    return get_state()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@click.command("init-db", cls=Command, short_help="Create or upgrade the database.")
@with_appcontext
def init_db_command():
    """Create the database, or upgrade it to the newest schema, and say what it did and where."""
    from apikeys.migrate import current_revision

    engine = get_state().engine
    before = current_revision(engine)
    db.prepare(current_app)
    after = current_revision(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before is None:
        click.echo(f"Created the database at {where} (schema {after}).")
    elif before != after:
        click.echo(f"Upgraded the database at {where} from schema {before} to {after}.")
    else:
        click.echo(f"The database at {where} is up to date (schema {after}).")


@click.group("db", cls=Group)
def db_group():
    """Database schema migrations (Alembic)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade_command(revision):
    """Upgrade the schema to REVISION (default: the newest)."""
    from alembic.util import CommandError

    try:
        db.upgrade(get_state().engine, revision)
    except CommandError as error:  # an unknown revision, say
        raise click.ClickException(str(error)) from None
    click.echo(f"Database is at {revision}.")


@click.command("token", cls=Command, short_help="Print a signed JWT for a tenant.")
@click.option("--tenant", required=True, callback=_tenant, help="The tenant the token speaks for.")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Lifetime in seconds.")
@click.option("--sub", callback=_actor, help="The actor the audit log records (the sub claim).")
@with_appcontext
def token_command(tenant, ttl, sub):
    """Print a signed JWT for a tenant, for the Authorization header."""
    config = current_app.config
    longest = config["APIKEYS_JWT_MAX_LIFETIME"]
    if longest and ttl > longest:
        raise click.BadParameter(f"must be at most APIKEYS_JWT_MAX_LIFETIME ({longest}).", param_hint="--ttl")
    claims = {"sub": sub} if sub else {}
    click.echo(tokens.issue_token(config, tenant, ttl, **claims))


@click.group("keys", cls=Group)
def keys_group():
    """Manage API keys without the server."""


@keys_group.command("create")
@tenant_option
@click.option("--name", required=True, help="A display name, at most 100 characters.")
@environment_option
@click.option("--expires-at", help="An ISO-8601 time with a zone, such as 2026-12-31T00:00:00Z.")
@click.option("--scope", "scopes", multiple=True, help="A scope the key grants; repeat for several.")
@click.option("--meta", help="A JSON object of at most 4 KiB.")
@with_appcontext
def create_command(tenant, name, environment, expires_at, scopes, meta):
    """Create a key and print it, secret included (shown once)."""
    from apikeys.schemas import CreatedKeySchema
    from apikeys.schemas import CreateKeySchema

    body = {"name": name, "environment": environment, "scopes": list(scopes), "expiresAt": expires_at}
    if meta is not None:
        try:
            body["meta"] = json.loads(meta)
        except (ValueError, RecursionError):
            raise click.BadParameter("must be a JSON object.", param_hint="--meta") from None
    try:
        fields = CreateKeySchema().load(body)
    except Exception as error:  # marshmallow.ValidationError
        raise click.UsageError(errors.one_line(getattr(error, "messages", {}))) from None
    _echo_json(CreatedKeySchema().dump(operations.create_key(_ready_state(), tenant, ACTOR, **fields)))


@keys_group.command("list")
@tenant_option
@with_appcontext
def list_command(tenant):
    """Print a tenant's keys as JSON, newest first."""
    from apikeys.schemas import KeySchema

    with _ready_state().engine.connect() as conn:
        rows = store.list_keys(conn, tenant, limit=None, offset=0)
    _echo_json(KeySchema(many=True).dump(rows))


@keys_group.command("toggle")
@tenant_option
@key_id_argument
@with_appcontext
def toggle_command(tenant, key_id):
    """Disable an active key, or enable a disabled one."""
    _echo_json({"id": key_id, "active": operations.toggle_key(_ready_state(), tenant, ACTOR, key_id)})


@keys_group.command("regenerate")
@tenant_option
@key_id_argument
@click.option("--grace-period", type=click.IntRange(0, 604800), help="Seconds the old secret keeps working.")
@with_appcontext
def regenerate_command(tenant, key_id, grace_period):
    """Give a key a new secret and print it (shown once)."""
    from apikeys.schemas import RegeneratedKeySchema

    regenerated = operations.regenerate_key(_ready_state(), tenant, ACTOR, key_id, grace_period)
    _echo_json(RegeneratedKeySchema().dump(regenerated))


@keys_group.command("delete")
@tenant_option
@key_id_argument
@with_appcontext
def delete_command(tenant, key_id):
    """Delete a key for good."""
    operations.delete_key(_ready_state(), tenant, ACTOR, key_id)
    click.echo(f"Deleted {key_id}.")


@keys_group.command("generate", short_help="Print a new full key without storing it.")
@environment_option
def generate_command(environment):
    """Print a fresh, valid full key without storing it (for import files)."""
    click.echo(f"{keys.new_public_key(environment)}.{keys.new_secret(environment)}")


@keys_group.command("import", short_help="Import keys known in advance from a JSON file.")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@with_appcontext
def import_command(file):
    """Import keys known in advance from a JSON list of {tenant, name, environment, fullKey}."""
    try:
        text = file.read()
    except UnicodeDecodeError:
        raise click.ClickException(f"{file.name} is not UTF-8 text.") from None
    entries = operations.read_import_file(text, file.name)
    created, unchanged = operations.import_keys(_ready_state(), entries)
    click.echo(f"Imported {_plural(created, 'key')}; {_plural(unchanged, 'key')} already there.")


@click.command("audit", cls=Command)
@tenant_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="How many entries.")
@with_appcontext
def audit_command(tenant, limit):
    """Print a tenant's audit log as JSON, newest first."""
    from apikeys.schemas import AuditEntrySchema

    with _ready_state().engine.connect() as conn:
        entries = store.list_audit_entries(conn, tenant, limit, 0)
    _echo_json(AuditEntrySchema(many=True).dump(entries))


@click.group("verifier-key", cls=Group, short_help="The verifier key (see docs/security.md).")
def verifier_key_group():
    """The key the secrets' digests are written under (see docs/security.md)."""


@verifier_key_group.command("adopt", short_help="Make this host's verifier key the database's.")
@click.confirmation_option(prompt="Every key will take the bcrypt path once. Adopt this host's verifier key?")
@with_appcontext
def adopt_command():
    """Make this host's verifier key the database's, after changing APIKEYS_VERIFIER_KEY."""
    state = get_state()
    db.upgrade(state.engine)
    db.adopt_verifier_key(state.engine, state.verifier.fingerprint)
    click.echo(f"The database now uses verifier key {state.verifier.tag[:-1]}; restart every host with it.")


COMMANDS = [init_db_command, db_group, token_command, keys_group, audit_command, verifier_key_group]


def init_app(app) -> None:
    """Register the commands on the app, so `flask --app app` has them too."""
    for command in COMMANDS:
        app.cli.add_command(command)


def _create_app():
    from apikeys import create_app

    return create_app()


@click.group(cls=Group)
@click.version_option(package_name="apikeys", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx):
    """apikeys: a self-hosted API-key service. Settings come from APIKEYS_* variables (see README.md)."""
    if not isinstance(ctx.obj, ScriptInfo):  # Flask's test runner hands its own in
        ctx.obj = ScriptInfo(create_app=_create_app, set_debug_flag=False, load_dotenv_defaults=False)


for _command in [serve_command, *COMMANDS]:
    main.add_command(_command)
