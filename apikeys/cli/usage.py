"""``apikeys usage``: how often a tenant's keys (or one key) were verified, per hour or day, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io

import click
import marshmallow as ma
from flask.cli import with_appcontext
from marshmallow import fields

from apikeys import errors
from apikeys import usage_schemas
from apikeys.cli.base import Command
from apikeys.cli.base import check_optional_tenant
from apikeys.cli.base import database_url_option
from apikeys.cli.base import echo_json
from apikeys.cli.base import json_escape
from apikeys.cli.base import ready_state
from apikeys.cli.policy import option_errors
from apikeys.schema_fields import Timestamp
from apikeys.usage import reading

UNKNOWN = "unknownKey"  # the tenant-less total's one count, named as the API would name the column unknown_key
FORMATS = ("table", "csv", "json")
HELP = (
    "Print how often a tenant's keys (or one key, with --key) were verified, with what result, per hour or day: "
    "the tenant's buckets and totals and its top keys, or the key's buckets. --unknown instead prints the "
    "verifications of keys whose public key is unknown, which belong to no tenant. Times are ISO-8601 with a zone "
    "(2026-12-06T00:00:00Z); --since defaults to 24 hours before --until, --until to now; --since is floored to the "
    "granularity. The numbers are the API's (GET /dashboard/api-keys/{id}/usage, GET /dashboard/usage). Counts "
    "reach the database every APIKEYS_USAGE_FLUSH_SECONDS (5 s by default): a running service's last seconds of "
    "verifications are not visible yet."
)


class UnknownCountsSchema(ma.Schema):
    unknownKey = fields.Integer(required=True)


class UnknownBucketSchema(UnknownCountsSchema):
    start = Timestamp(required=True)


class UnknownUsageSchema(usage_schemas.UsageSchema):
    buckets = fields.List(fields.Nested(UnknownBucketSchema), required=True)
    totals = fields.Nested(UnknownCountsSchema, required=True)


def read_range(schema: ma.Schema, **given) -> dict:
    """Load the options as the API loads its query string; raise UsageError naming each option that is wrong."""
    try:
        return schema.load({name: value for name, value in given.items() if value is not None})
    except ma.ValidationError as error:
        raise click.UsageError(named(error.messages)) from None


def named(messages: dict) -> str:
    """Say the API's errors, keyed by its parameter names, under this command's options."""
    return option_errors({f"--{name}": texts for name, texts in messages.items()})


def check_options(tenant, key_id, unknown: bool, top) -> None:
    if unknown:
        for option, value in (("--tenant", tenant), ("--key", key_id), ("--top", top)):
            if value is not None:
                raise click.UsageError(f"--unknown and {option} cannot go together.")
    elif tenant is None:
        raise click.UsageError("Give --tenant (with --key for one key), or --unknown.")
    elif key_id is not None and top is not None:
        raise click.UsageError("--key and --top cannot go together: --top picks the tenant's top keys.")


def read_usage(tenant, key_id, unknown: bool, args: dict) -> tuple[dict, list[str]]:
    """Return the usage asked for as the API dumps its ``data``, and the names of the counts each bucket has."""
    state = ready_state()
    try:
        if unknown:
            return UnknownUsageSchema().dump(reading.unknown_usage(state, **args)), [UNKNOWN]
        if key_id is not None:
            data = reading.key_usage(state, tenant, key_id, **args)
            return usage_schemas.KeyUsageSchema().dump(data), reading.RESULT_NAMES
        data = reading.tenant_usage(state, tenant, **args)
        return usage_schemas.TenantUsageSchema().dump(data), reading.RESULT_NAMES
    except errors.KeyNotFound:
        raise  # said as `keys get` says it, by Command
    except errors.ApiKeysError as error:
        if not error.errors:
            raise
        raise click.UsageError(named(error.errors)) from None  # a range too long, since not before until


@click.command("usage", cls=Command, short_help="Print how often keys were verified, per hour or day.", help=HELP)
@database_url_option
@click.option("--tenant", callback=check_optional_tenant, help="The tenant whose keys to count.")
@click.option("--key", "key_id", metavar="KEY_ID", help="One of the tenant's keys (a deleted one's id too).")
@click.option("--unknown", is_flag=True, help="Count the keys with an unknown public key (no tenant's) instead.")
@click.option(
    "--since", metavar="TIME", help="The first bucket's time, floored to the granularity. Default: --until - 24 h."
)
@click.option("--until", metavar="TIME", help="The end of the range (excluded). Default: now.")
@click.option("--granularity", metavar="hour|day", help="A bucket per hour (the default) or per UTC day.")
@click.option(
    "--format",
    "output",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people; csv (a header, a row a bucket) for a spreadsheet; json: the API's data.",
)
@click.option("--top", metavar="N", help=f"How many top keys to show, 1 to {reading.MAX_TOP} (default 10).")
@with_appcontext
def usage_command(tenant, key_id, unknown, since, until, granularity, output, top):
    """Print a tenant's, a key's or the unknown keys' verifications per hour or day."""
    check_options(tenant, key_id, unknown, top)
    tenant_wide = tenant is not None and key_id is None  # --top is refused elsewhere, so its default is the API's
    schema = usage_schemas.TenantUsageArgsSchema() if tenant_wide else usage_schemas.UsageArgsSchema()
    args = read_range(schema, since=since, until=until, granularity=granularity, top=top)
    data, names = read_usage(tenant, key_id, unknown, args)
    if output == "json":
        echo_json(data)
    elif output == "csv":
        click.echo(as_csv(data, names), nl=False)
    else:
        click.echo(as_table(data, names, title(tenant, key_id, data)))


def as_csv(data: dict, names: list[str]) -> str:
    """One header row, then one row per bucket: start and each count (no totals row: a spreadsheet adds up)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["start", *names])
    writer.writerows([bucket["start"], *(bucket[name] for name in names)] for bucket in data["buckets"])
    return text.getvalue()


def title(tenant, key_id, data: dict) -> str:
    whose = f"Key {key_id} of tenant {tenant}" if key_id else f"Tenant {tenant}" if tenant else "Unknown keys"
    whose = "".join(map(json_escape, whose))  # free text: no control character reaches the terminal
    return f"{whose}, per {data['granularity']}, from {data['since']} to {data['until']}:"


def as_table(data: dict, names: list[str], heading: str) -> str:
    """The buckets, one a row, and a totals row; then the tenant's top keys, if it is a tenant's usage."""
    rows = [[bucket["start"], *(bucket[name] for name in names)] for bucket in data["buckets"]]
    lines = [heading, *aligned(["start", *names], [*rows, ["total", *(data["totals"][name] for name in names)]])]
    if "topKeys" in data:
        lines.append("")
        if not data["topKeys"]:
            lines.append("Top keys: none verified in this range.")
        else:
            lines.append("Top keys:")
            top = [
                [key["id"], shown_name(key["name"]), sum(key["totals"].values()), *(key["totals"][n] for n in names)]
                for key in data["topKeys"]
            ]
            lines += aligned(["id", "name", "total", *names], top, left=2)
    return "\n".join(lines)


def shown_name(name: str | None) -> str:
    return "(deleted)" if name is None else "".join(map(json_escape, name))


def aligned(header: list[str], rows: list[list], left: int = 1) -> list[str]:
    """Return the header and rows as lines of columns: the first ``left`` columns to the left, numbers right."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[index]) for row in cells) for index in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if index < left else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]
