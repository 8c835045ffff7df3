"""``apikeys keys ...`` and ``apikeys audit``: managing a tenant's keys without the server."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from apikeys import keys
from apikeys.cli.base import ACTOR
from apikeys.cli.base import Command
from apikeys.cli.base import Group
from apikeys.cli.base import database_url_option
from apikeys.cli.base import echo_json
from apikeys.cli.base import environment_option
from apikeys.cli.base import key_id_argument
from apikeys.cli.base import plural
from apikeys.cli.base import ready_state
from apikeys.cli.base import tenant_option
from apikeys.cli.limits import create_options
from apikeys.cli.limits import limits_body
from apikeys.cli.policy import option_errors
from apikeys.cli.policy import read_meta
from apikeys.cli.policy import update_command
from apikeys.dashboard import importing
from apikeys.dashboard import operations
from apikeys.limits import MAX_CREDITS
from apikeys.storage import queries


@click.group("keys", cls=Group)
def keys_group():
    """Manage API keys without the server."""


@keys_group.command("create")
@database_url_option
@tenant_option
@click.option("--name", required=True, help="A display name, at most 100 characters.")
@environment_option
@click.option("--expires-at", help="An ISO-8601 time with a zone, such as 2026-12-31T00:00:00Z.")
@click.option("--scope", "scopes", multiple=True, help="A scope the key grants; repeat for several.")
@click.option("--meta", help="A JSON object of at most 4 KiB.")
@create_options
@with_appcontext
def create_command(tenant, name, environment, expires_at, scopes, meta, rate_limit, quota, quota_refill):
    """Create a key and print it, secret included (shown once)."""
    from apikeys.schemas import CreatedKeySchema
    from apikeys.schemas import CreateKeySchema

    body = {"name": name, "environment": environment, "scopes": list(scopes), "expiresAt": expires_at}
    if meta is not None:
        body["meta"] = read_meta(meta)
    body |= limits_body(rate_limit, quota, quota_refill)
    try:
        fields = CreateKeySchema().load(body)
    except Exception as error:  # marshmallow.ValidationError
        raise click.UsageError(option_errors(getattr(error, "messages", {}))) from None  # named by option
    echo_json(CreatedKeySchema().dump(operations.create_key(ready_state(), tenant, ACTOR, **fields)))


@keys_group.command("list")
@database_url_option
@tenant_option
@with_appcontext
def list_command(tenant):
    """Print a tenant's keys as JSON, newest first."""
    from apikeys.schemas import KeySchema

    with ready_state().engine.connect() as conn:
        rows = queries.list_keys(conn, tenant, limit=None, offset=0)
    echo_json(KeySchema(many=True).dump(rows))


@keys_group.command("get")
@database_url_option
@tenant_option
@key_id_argument
@with_appcontext
def get_command(tenant, key_id):
    """Print one of a tenant's keys as JSON (never its secret)."""
    from apikeys.schemas import KeySchema

    echo_json(KeySchema().dump(operations.get_key(ready_state(), tenant, key_id)))


keys_group.add_command(update_command)


@keys_group.command("add-credits", short_help="Add credits to a key's quota.")
@database_url_option
@tenant_option
@key_id_argument
@click.option("--amount", required=True, type=click.IntRange(1, MAX_CREDITS), help="Credits to add, 1 to 10^12.")
@with_appcontext
def add_credits_command(tenant, key_id, amount):
    """Add credits to a key's quota (in one step with the verifications taking them) and print the key."""
    from apikeys.schemas import KeySchema

    echo_json(KeySchema().dump(operations.add_credits(ready_state(), tenant, ACTOR, key_id, amount)))


def set_active(tenant: str, key_id: str, active: bool) -> None:
    changed = operations.set_active(ready_state(), tenant, ACTOR, key_id, active)
    echo_json({"id": key_id, "active": active, "changed": changed})


@keys_group.command("enable", short_help="Enable a key; an enabled key stays as it is.")
@database_url_option
@tenant_option
@key_id_argument
@with_appcontext
def enable_command(tenant, key_id):
    """Enable a key; an enabled one stays as it is ("changed": false)."""
    set_active(tenant, key_id, True)


@keys_group.command("disable", short_help="Disable a key; a disabled key stays as it is.")
@database_url_option
@tenant_option
@key_id_argument
@with_appcontext
def disable_command(tenant, key_id):
    """Disable a key; a disabled one stays as it is ("changed": false)."""
    set_active(tenant, key_id, False)


@keys_group.command("toggle")
@database_url_option
@tenant_option
@key_id_argument
@with_appcontext
def toggle_command(tenant, key_id):
    """Disable an active key, or enable a disabled one."""
    echo_json({"id": key_id, "active": operations.toggle_key(ready_state(), tenant, ACTOR, key_id)})


@keys_group.command("regenerate")
@database_url_option
@tenant_option
@key_id_argument
@click.option("--grace-period", type=click.IntRange(0, 604800), help="Seconds the old secret keeps working.")
@with_appcontext
def regenerate_command(tenant, key_id, grace_period):
    """Give a key a new secret and print it (shown once)."""
    from apikeys.schemas import RegeneratedKeySchema

    regenerated = operations.regenerate_key(ready_state(), tenant, ACTOR, key_id, grace_period)
    echo_json(RegeneratedKeySchema().dump(regenerated))


@keys_group.command("delete")
@database_url_option
@tenant_option
@key_id_argument
@with_appcontext
def delete_command(tenant, key_id):
    """Delete a key for good."""
    operations.delete_key(ready_state(), tenant, ACTOR, key_id)
    click.echo(f"Deleted {key_id}.")


@keys_group.command("generate", short_help="Print a new full key without storing it.")
@environment_option
def generate_command(environment):
    """Print a fresh, valid full key without storing it (for import files)."""
    click.echo(f"{keys.new_public_key(environment)}.{keys.new_secret(environment)}")


@keys_group.command("import", short_help="Import keys known in advance from a JSON file.")
@database_url_option
@click.argument("file", type=click.File("r", encoding="utf-8"))
@with_appcontext
def import_command(file):
    """Import keys known in advance from a JSON list of {tenant, name, environment, fullKey}."""
    try:
        text = file.read()
    except UnicodeDecodeError:
        raise click.ClickException(f"{file.name} is not UTF-8 text.") from None
    entries = importing.read_import_file(text, file.name)
    created, unchanged = importing.import_keys(ready_state(), entries)
    click.echo(f"Imported {plural(created, 'key')}; {plural(unchanged, 'key')} already there.")


@click.command("audit", cls=Command)
@database_url_option
@tenant_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="How many entries.")
@with_appcontext
def audit_command(tenant, limit):
    """Print a tenant's audit log as JSON, newest first."""
    from apikeys.schemas import AuditEntrySchema

    with ready_state().engine.connect() as conn:
        entries = queries.list_audit_entries(conn, tenant, limit, 0)
    echo_json(AuditEntrySchema(many=True).dump(entries))
