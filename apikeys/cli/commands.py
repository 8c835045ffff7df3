"""The commands that work on an app: init-db, db, token, keys, audit, verifier-key (also `flask --app app ...`)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from apikeys import tokens
from apikeys.cli.base import Command
from apikeys.cli.base import Group
from apikeys.cli.base import check_actor
from apikeys.cli.base import check_tenant
from apikeys.cli.keys import audit_command
from apikeys.cli.keys import keys_group
from apikeys.storage import fingerprints
from apikeys.storage import migrate
from apikeys.verification import extension
from apikeys.verification.extension import get_state


@click.command("init-db", cls=Command, short_help="Create or upgrade the database.")
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
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade_command(revision):
    """Upgrade the schema to REVISION (default: the newest)."""
    from alembic.util import CommandError

    try:
        migrate.upgrade(get_state().engine, revision)
    except CommandError as error:  # an unknown revision, say
        raise click.ClickException(str(error)) from None
    click.echo(f"Database is at {revision}.")


@click.command("token", cls=Command, short_help="Print a signed JWT for a tenant.")
@click.option("--tenant", required=True, callback=check_tenant, help="The tenant the token speaks for.")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Lifetime in seconds.")
@click.option("--sub", callback=check_actor, help="The actor the audit log records (the sub claim).")
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


COMMANDS = [init_db_command, db_group, token_command, keys_group, audit_command, verifier_key_group]


def init_app(app) -> None:
    """Register the commands on the app, so `flask --app app` has them too."""
    for command in COMMANDS:
        app.cli.add_command(command)
