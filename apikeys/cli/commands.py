"""The commands that work on an app: init-db, db, token, keys, audit, verifier-key (also `flask --app app ...`)."""

from __future__ import annotations

import os
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from apikeys import instance
from apikeys import keys
from apikeys import tokens
from apikeys.cli.base import Command
from apikeys.cli.base import Group
from apikeys.cli.base import check_optional_tenant
from apikeys.cli.base import check_tenant
from apikeys.cli.base import database_url_option
from apikeys.cli.base import service_settings
from apikeys.cli.keys import audit_command
from apikeys.cli.keys import keys_group
from apikeys.cli.usage import usage_command
from apikeys.storage import fingerprints
from apikeys.storage import migrate
from apikeys.verification import extension
from apikeys.verification.extension import get_state
from apikeys.verification.state import VERIFIER_KEY_FILE


@click.command("init-db", cls=Command, short_help="Create or upgrade the database.")
@database_url_option
@with_appcontext
def init_db_command():
    """Create the database, or upgrade it to the newest schema, and say what it did and where."""
    engine = get_state().engine
    before = migrate.current_revision(engine)
    extension.prepare(current_app)
    after = migrate.current_revision(engine)
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
@database_url_option
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade_command(revision):
    """Upgrade the schema to REVISION (default: the newest)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        migrate.upgrade(get_state().engine, revision)
    except CommandError as error:  # an unknown revision, say
        raise click.ClickException(str(error)) from None
    # Alembic's upgrade to an older revision does nothing: say so rather than name a revision the database is not at.
    current = migrate.current_revision(get_state().engine)
    script = None if revision.startswith(("+", "-")) else ScriptDirectory.from_config(migrate.alembic_config(None))
    wanted = script and script.get_revision(revision)  # a relative revision (+1) names none to compare with
    if script and current != (wanted and wanted.revision):
        older = wanted.revision if wanted else "base"
        raise click.ClickException(f"The database is at {current}, newer than {older}: apikeys does not downgrade.")
    click.echo(f"Database is at {revision}.")


@db_group.command("current", short_help='Print the schema revision, or "no schema".')
@database_url_option
@with_appcontext
def db_current_command():
    """Print the schema revision (with "(head)" if it is the newest), or "no schema"."""
    revision = migrate.current_revision(get_state().engine)
    newest = migrate.history()[0][0]
    click.echo("no schema" if revision is None else f"{revision} (head)" if revision == newest else revision)


@db_group.command("history")
def db_history_command():
    """List the schema revisions this version knows, newest first."""
    for revision, description in migrate.history():
        click.echo(f"{revision} {description}")


@click.command("token", cls=Command, short_help="Print a signed JWT for a tenant.")
@click.option("--tenant", required=True, callback=check_tenant, help="The tenant the token speaks for.")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Lifetime in seconds.")
@click.option("--sub", callback=check_optional_tenant, help="The actor the audit log records (the sub claim).")
@with_appcontext
def token_command(tenant, ttl, sub):
    """Print a signed JWT for a tenant, for the Authorization header."""
    config = current_app.config
    longest = config["APIKEYS_JWT_MAX_LIFETIME"]
    if longest and ttl > longest:
        raise click.BadParameter(f"must be at most APIKEYS_JWT_MAX_LIFETIME ({longest}).", param_hint="--ttl")
    claims = {"sub": sub} if sub else {}
    click.echo(tokens.issue_token(config, tenant, ttl, **claims))


@click.group("verifier-key", cls=Group, short_help="The verifier key (see docs/security.md).")
def verifier_key_group():
    """The key the secrets' digests are written under (see docs/security.md)."""


@verifier_key_group.command("adopt", short_help="Make this host's verifier key the database's.")
@database_url_option
@click.confirmation_option(
    prompt="Hosts with another key will refuse to start; keep the old one in APIKEYS_VERIFIER_KEY_PREVIOUS. Adopt?"
)
@with_appcontext
def adopt_command():
    """Make this host's verifier key the database's, after changing APIKEYS_VERIFIER_KEY."""
    state = get_state()
    migrate.upgrade(state.engine)
    fingerprints.adopt_verifier_key(state.engine, state.verifier.fingerprint)
    click.echo(f"The database now uses verifier key {state.verifier.tag[:-1]}; restart every host with it.")


@verifier_key_group.command("show", short_help="Print the verifier key, for a service that verifies with it.")
@click.option("--fingerprint", is_flag=True, help="Print only the key's tag, which is safe to log and compare.")
@click.option("--yes", is_flag=True, help="Print the key to a pipe or a file too (a terminal needs no --yes).")
@click.pass_context
def show_command(ctx, fingerprint, yes):
    """Print this service's verifier key (APIKEYS_VERIFIER_KEY, else instance/verifier-key); never make one."""
    settings, instance_path = service_settings(ctx)
    key, source = stored_verifier_key(settings["APIKEYS_VERIFIER_KEY"], instance_path)
    tag = keys.Verifier(key).tag[:-1]
    if fingerprint:
        click.echo(tag)
        return
    # On a terminal the operator sees what they asked for; anywhere else (a log, a CI job's output) it could
    # stay for good, so a script says it means it.
    if not (yes or sys.stdout.isatty()):
        raise click.ClickException(
            "Not printing the verifier key to a pipe or a file: add --yes to do so on purpose, "
            "or --fingerprint for its tag alone."
        )
    click.echo(key)
    click.echo(f"Verifier key {tag}, from {source}.", err=True)


def stored_verifier_key(configured: str, instance_path: str) -> tuple[str, str]:
    """Return the service's verifier key and where it comes from; raise ClickException when it has none yet."""
    path = os.path.join(instance_path, VERIFIER_KEY_FILE)
    if configured:  # given, or (in an app made already) read from the file at start
        return configured, path if file_holds(path, configured) else "APIKEYS_VERIFIER_KEY"
    try:
        return instance.read_secret(path), path
    except FileNotFoundError:
        raise click.ClickException(
            f"There is no verifier key: APIKEYS_VERIFIER_KEY is empty and {path} does not exist; the service makes "
            "one when it first starts (`apikeys init-db`), in the instance folder it is started with."
        ) from None


def file_holds(path: str, secret: str) -> bool:
    """Tell whether the file at ``path`` holds ``secret`` (a missing or unreadable file does not)."""
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip() == secret
    except (OSError, ValueError):
        return False


COMMANDS = [init_db_command, db_group, token_command, keys_group, audit_command, usage_command, verifier_key_group]


def init_app(app) -> None:
    """Register the commands on the app, so `flask --app app` has them too."""
    for command in COMMANDS:
        app.cli.add_command(command)
