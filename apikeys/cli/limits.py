"""The rate-limit and quota options of ``keys create`` and ``keys update``, checked as the API checks them."""

from __future__ import annotations

import re

import click

# ASCII digits only: re's \d would take any script's digits, which int() reads but nobody means.
RATE_LIMIT = re.compile(r"(-?[0-9]+)/([0-9]+)([smhd]?)", re.ASCII)
REFILL = re.compile(r"(-?[0-9]+)/([a-z]+)", re.ASCII)
COUNT = re.compile(r"(-?[0-9]+)", re.ASCII)
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DIGITS = 30  # far past every bound, short of what int() refuses to read: the schema says the bound

# Where a limit's field came from on the command line: an error names what the user typed (cli.policy.option_errors).
OPTIONS = {
    "rateLimit": {"limit": "--rate-limit (limit)", "periodSeconds": "--rate-limit (period)"},
    "quota": {
        "remaining": "--quota",
        "refillAmount": "--quota-refill (amount)",
        "refillInterval": "--quota-refill (interval)",
    },
}
WHOLE = {"rateLimit": "--rate-limit", "quota": "--quota"}


def _read(pattern: re.Pattern, value: str | None, rule: str):
    if value is None:
        return None
    found = pattern.fullmatch(value)
    if found is None or any(len(part) > MAX_DIGITS for part in found.groups()):
        raise click.BadParameter(f"must be {rule}.")
    return found.groups()


def read_rate_limit(ctx, param, value):
    """Read LIMIT/PERIOD (PERIOD in seconds, or with s, m, h or d) into the API's rateLimit."""
    parts = _read(RATE_LIMIT, value, "LIMIT/PERIOD, such as 100/60 (seconds) or 100/1m (s, m, h, d)")
    if parts is None:
        return None
    limit, period, unit = parts
    return {"limit": int(limit), "periodSeconds": int(period) * UNITS[unit]}


def read_quota(ctx, param, value):
    """Read the credits a key has left."""
    parts = _read(COUNT, value, "a whole number of credits, such as 1000")
    return None if parts is None else int(parts[0])


def read_refill(ctx, param, value):
    """Read AMOUNT/INTERVAL into (amount, interval); the schema says which intervals there are."""
    parts = _read(REFILL, value, "AMOUNT/INTERVAL, such as 1000/daily or 1000/monthly")
    return None if parts is None else (int(parts[0]), parts[1])


rate_limit_option = click.option(
    "--rate-limit",
    metavar="LIMIT/PERIOD",
    callback=read_rate_limit,
    help="At most LIMIT verifications per PERIOD seconds (or 30s, 1m, 1h, 1d): 100/60, 100/1m.",
)
quota_option = click.option(
    "--quota",
    metavar="CREDITS",
    callback=read_quota,
    help="Credits the key has left; each verification takes its cost.",
)
quota_refill_option = click.option(
    "--quota-refill",
    metavar="AMOUNT/daily|monthly",
    callback=read_refill,
    help="With --quota: set the credits back to AMOUNT at the start of each UTC day or month.",
)
no_rate_limit_option = click.option("--no-rate-limit", is_flag=True, help="Remove the key's rate limit.")
no_quota_option = click.option("--no-quota", is_flag=True, help="Remove the key's quota: unlimited credits.")


def create_options(command):
    """Add --rate-limit, --quota and --quota-refill to ``command``."""
    return rate_limit_option(quota_option(quota_refill_option(command)))


def update_options(command):
    """Add the create options and --no-rate-limit, --no-quota to ``command``."""
    return create_options(no_rate_limit_option(no_quota_option(command)))


def limits_body(rate_limit, quota, quota_refill, no_rate_limit=False, no_quota=False) -> dict:
    """Return the API's camelCase rateLimit and quota for what the options give (null removes one)."""
    if rate_limit is not None and no_rate_limit:
        raise click.UsageError("--rate-limit and --no-rate-limit cannot go together.")
    if no_quota and (quota is not None or quota_refill is not None):
        raise click.UsageError(
            f"{'--quota' if quota is not None else '--quota-refill'} and --no-quota cannot go together."
        )
    if quota_refill is not None and quota is None:
        raise click.UsageError("--quota-refill needs --quota, the credits the key starts with.")
    body = {}
    if rate_limit is not None or no_rate_limit:
        body["rateLimit"] = rate_limit
    if quota is not None or no_quota:
        amount, interval = quota_refill or (None, None)
        body["quota"] = None if no_quota else {"remaining": quota, "refillAmount": amount, "refillInterval": interval}
    return body
