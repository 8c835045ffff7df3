"""``apikeys keys update``: change a key's name, scopes, expiry, metadata or limits, checked as the API checks them."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from apikeys.cli import limits
from apikeys.cli.base import ACTOR
from apikeys.cli.base import Command
from apikeys.cli.base import database_url_option
from apikeys.cli.base import echo_json
from apikeys.cli.base import key_id_argument
from apikeys.cli.base import ready_state
from apikeys.cli.base import tenant_option
from apikeys.cli.limits import limits_body
from apikeys.cli.limits import update_options
from apikeys.dashboard import operations

# The API's field names, as this command's options spell them: an error names what the user typed.
OPTIONS = {"name": "--name", "expiresAt": "--expires-at", "scopes": "--scope", "meta": "--meta"}


def read_meta(meta: str) -> object:
    """Return ``--meta``'s JSON value; raise BadParameter for text that is not JSON."""
    try:
        return json.loads(meta)
    except (ValueError, RecursionError):
        raise click.BadParameter("must be a JSON object.", param_hint="--meta") from None


def option_errors(messages: dict) -> str:
    """Say marshmallow's errors on one line, each under the option that carried the field."""
    parts = []
    for field, texts in messages.items():
        where = OPTIONS.get(field, field)
        if field in limits.OPTIONS and isinstance(texts, dict):  # a limit's parts, each under the option that gave it
            named = limits.OPTIONS[field]
            parts += [
                f"{named.get(part, limits.WHOLE[field])}: {' '.join(map(str, item))}" for part, item in texts.items()
            ]
        elif isinstance(texts, dict):  # a list's items: {index: [messages]}; the nth --scope counts from 1
            parts += [f"{where} {_nth(index)}: {' '.join(map(str, item))}" for index, item in texts.items()]
        else:
            parts.append(f"{where}: {' '.join(map(str, texts))}")
    return "; ".join(parts)


def _nth(index) -> str:
    return f"#{index + 1}" if isinstance(index, int) else f"[{index}]"


# The limits' options come last, after the sentence that scripts written before them may look for.
NOTHING_GIVEN = (
    "--name, --scope, --no-scopes, --expires-at, --no-expiry, --meta. "
    "Or of --rate-limit, --no-rate-limit, --quota (with --quota-refill), --no-quota."
)


def exclusive(first: str, second: str) -> click.UsageError:
    return click.UsageError(f"{first} and {second} cannot go together.")


@click.command("update", cls=Command, short_help="Change a key's name, scopes, expiry, metadata or limits.")
@database_url_option
@tenant_option
@key_id_argument
@click.option("--name", help="A new display name, at most 100 characters.")
@click.option("--scope", "scopes", multiple=True, help="A scope the key grants from now on; repeat for several.")
@click.option("--no-scopes", is_flag=True, help="Grant no scopes any more.")
@click.option("--expires-at", help="A new expiry: an ISO-8601 time with a zone, in the future.")
@click.option("--no-expiry", is_flag=True, help="Let the key never expire.")
@click.option("--meta", help="New metadata, replacing the old: a JSON object of at most 4 KiB.")
@update_options
@with_appcontext
def update_command(tenant, key_id, name, scopes, no_scopes, expires_at, no_expiry, meta, **limit_options):
    """Change a key's name, scopes, expiry, metadata or limits and print it; what is not given stays."""
    from apikeys.schemas import KeySchema
    from apikeys.schemas import UpdateKeySchema

    if scopes and no_scopes:
        raise exclusive("--scope", "--no-scopes")
    if expires_at is not None and no_expiry:
        raise exclusive("--expires-at", "--no-expiry")
    body = {}
    if name is not None:
        body["name"] = name
    if scopes or no_scopes:
        body["scopes"] = list(scopes)
    if expires_at is not None or no_expiry:
        body["expiresAt"] = expires_at
    if meta is not None:
        body["meta"] = read_meta(meta)
    body |= limits_body(**limit_options)
    if not body:
        raise click.UsageError(f"Give at least one of {NOTHING_GIVEN}")
    try:
        changes = UpdateKeySchema().load(body)
    except Exception as error:  # marshmallow.ValidationError
        raise click.UsageError(option_errors(getattr(error, "messages", {}))) from None
    echo_json(KeySchema().dump(operations.update_key(ready_state(), tenant, ACTOR, key_id, changes)))
