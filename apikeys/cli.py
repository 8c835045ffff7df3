"""The ``apikeys`` command line: a Flask CLI group over create_app."""

from __future__ import annotations

import json
import os
import sys

import click
from flask import current_app
from flask.cli import FlaskGroup
from flask.cli import with_appcontext

from apikeys import db
from apikeys import keys
from apikeys import manage
from apikeys import store
from apikeys import tokens
from apikeys.schemas import CreatedKeySchema
from apikeys.schemas import CreateKeySchema
from apikeys.schemas import KeySchema
from apikeys.schemas import RegeneratedKeySchema

environment_option = click.option("--environment", required=True, type=click.Choice(keys.ENVIRONMENTS))
tenant_option = click.option("--tenant", required=True, help="The tenant the keys belong to.")


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2))


@click.command("token")
@click.option("--tenant", required=True, help="The tenant the token speaks for.")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Lifetime in seconds.")
@with_appcontext
def token_command(tenant, ttl):
    """Print a signed JWT for a tenant, for the Authorization header."""
    try:
        click.echo(tokens.issue_token(current_app.config, tenant, ttl))
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None


@click.group("keys")
def keys_group():
    """Manage API keys from the command line."""


@keys_group.command("create")
@tenant_option
@click.option("--name", required=True)
@environment_option
@with_appcontext
def create_command(tenant, name, environment):
    """Create a key and print it, secret included (shown once)."""
    errors = CreateKeySchema().validate({"name": name, "environment": environment})
    if errors:
        raise click.BadParameter("; ".join(errors.get("name", [])), param_hint="--name")
    with db.get_engine().begin() as conn:
        created = manage.create_key(
            conn, tenant, name.strip(), environment, current_app.config["APIKEYS_BCRYPT_ROUNDS"]
        )
    _echo_json(CreatedKeySchema().dump(created))


@keys_group.command("list")
@tenant_option
@with_appcontext
def list_command(tenant):
    """Print a tenant's keys as JSON, newest first."""
    with db.get_engine().connect() as conn:
        rows = store.list_keys(conn, tenant, limit=None, offset=0)
    _echo_json(KeySchema(many=True).dump(rows))


@keys_group.command("toggle")
@tenant_option
@click.argument("key_id")
@with_appcontext
def toggle_command(tenant, key_id):
    """Disable an active key, or enable a disabled one."""
    with db.get_engine().begin() as conn:
        active = store.toggle_key(conn, tenant, key_id)
    if active is None:
        raise click.ClickException(f"No key {key_id} for tenant {tenant}.")
    _echo_json({"id": key_id, "active": active})


@keys_group.command("regenerate")
@tenant_option
@click.argument("key_id")
@with_appcontext
def regenerate_command(tenant, key_id):
    """Give a key a new secret and print it (shown once)."""
    with db.get_engine().begin() as conn:
        regenerated = manage.regenerate_key(conn, tenant, key_id, current_app.config["APIKEYS_BCRYPT_ROUNDS"])
    if regenerated is None:
        raise click.ClickException(f"No key {key_id} for tenant {tenant}.")
    _echo_json(RegeneratedKeySchema().dump(regenerated))


@keys_group.command("delete")
@tenant_option
@click.argument("key_id")
@with_appcontext
def delete_command(tenant, key_id):
    """Delete a key for good."""
    with db.get_engine().begin() as conn:
        deleted = store.delete_key(conn, tenant, key_id)
    if not deleted:
        raise click.ClickException(f"No key {key_id} for tenant {tenant}.")
    click.echo(f"Deleted {key_id}.")


@keys_group.command("generate")
@environment_option
def generate_command(environment):
    """Print a fresh, valid full key without storing it (for import files)."""
    click.echo(f"{keys.new_public_key(environment)}.{keys.new_secret(environment)}")


@keys_group.command("import")
@click.argument("file", type=click.File("r"))
@with_appcontext
def import_command(file):
    """Import keys known in advance from a JSON list of {tenant, name, environment, fullKey}."""
    created, unchanged = import_file(file)
    click.echo(f"Imported {created} keys; {unchanged} were already there.")


def import_file(file) -> tuple[int, int]:
    """Import every entry of an open JSON file in one transaction; raise ClickException on a bad one."""
    try:
        entries = json.load(file)
    except json.JSONDecodeError as error:
        raise click.ClickException(f"{file.name} is not valid JSON: {error}") from None
    if not isinstance(entries, list):
        raise click.ClickException(f"{file.name} must hold a JSON list of keys.")
    rounds = current_app.config["APIKEYS_BCRYPT_ROUNDS"]
    created = unchanged = 0
    # One transaction: a bad entry anywhere leaves the database as it was.
    with db.get_engine().begin() as conn:
        for number, entry in enumerate(entries, start=1):
            try:
                tenant, name, environment, full_key = _read_entry(entry)
                if manage.import_key(conn, tenant, name, environment, full_key, rounds):
                    created += 1
                else:
                    unchanged += 1
            except manage.KeyImportError as error:
                raise click.ClickException(f"Entry {number}: {error}") from None
    return created, unchanged


def _read_entry(entry) -> tuple[str, str, str, str]:
    if not isinstance(entry, dict):
        raise manage.KeyImportError("must be an object.")
    missing = [field for field in ("tenant", "name", "environment", "fullKey") if not isinstance(entry.get(field), str)]
    if missing:
        raise manage.KeyImportError("needs string fields " + ", ".join(missing) + ".")
    errors = CreateKeySchema().validate({"name": entry["name"], "environment": entry["environment"]})
    if errors:
        raise manage.KeyImportError("; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items()))
    if not entry["tenant"] or len(entry["tenant"]) > tokens.MAX_TENANT_LENGTH:
        raise manage.KeyImportError("tenant must be 1 to 255 characters.")
    return entry["tenant"], entry["name"].strip(), entry["environment"], entry["fullKey"]


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", type=int, help="gunicorn workers (default: WEB_CONCURRENCY, else 2 x cores + 1).")
@click.option("--dev", is_flag=True, help="Print a ready token for tenant 'dev' and a curl to try.")
@click.option("--seed", type=click.Path(exists=True, dir_okay=False), help="Import keys from this file at start.")
def serve_command(host, port, workers, dev, seed):
    """Serve the API with gunicorn; the database is created or upgraded first."""
    environ = dict(os.environ, HOST=host, PORT=str(port))
    if workers:
        environ["WEB_CONCURRENCY"] = str(workers)
    if dev:
        environ["APIKEYS_DEV"] = "1"
    if seed:
        environ["APIKEYS_SEED"] = os.path.abspath(seed)
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:apikeys.gunicorn_conf", "apikeys:create_app()"]
    os.execve(sys.executable, argv, environ)  # noqa: S606 (replaces this process; no shell)


def init_app(app) -> None:
    """Register the commands on the app, so `flask --app app` has them too."""
    app.cli.add_command(token_command)
    app.cli.add_command(keys_group)


def _create_app():
    from apikeys import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False)
def main():
    """apikeys: a self-hosted API-key service."""


main.add_command(serve_command)
