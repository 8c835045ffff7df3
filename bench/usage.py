"""bench.run's usage phase: /verify with usage counting on (the apikeys server) against off, in the same rounds.

A third apikeys server with the same settings and database but APIKEYS_USAGE=off
serves the unlimited key of the main runs; each round measures it right after
the main server, so issue 20's goal (counting on within 5 % of off) is a ratio
of two servers measured side by side.
"""

from __future__ import annotations

import contextlib
import statistics
from pathlib import Path

from bench.load import apikeys_server
from bench.load import log
from bench.load import wrk

GOAL = 0.95  # issue 20: /verify with counting on ≥ 0.95 × off


class UsageOff:
    """The server that does not count, and its runs."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path, env: dict, args, key: str):
        self.args, self.tmp, self.key = args, tmp, key
        home = tmp / "usage-off-host"
        home.mkdir()
        settings = {**env, "APIKEYS_INSTANCE_PATH": str(tmp / "apikeys-usage-off"), "APIKEYS_USAGE": "off"}
        self.server = apikeys_server(home, settings, args)
        stack.enter_context(self.server)
        log(f"a server with APIKEYS_USAGE=off on {self.server.url}")

    def run(self, seconds: float) -> dict:
        """One wrk run of the unlimited key on the server that does not count."""
        return wrk(self.server, "/verify", seconds, self.args, [self.key], self.tmp)


def headline(results: dict) -> str:
    """The Results section's sentence: counting on ÷ off, against issue 20's goal."""
    on, off = results["verify"], results["usage_off"]
    ratio = statistics.median(run["rps"] for run in on) / statistics.median(run["rps"] for run in off)
    rounds = ", ".join(f"{a['rps'] / b['rps']:.2f}" for a, b in zip(on, off, strict=True) if b["rps"])
    cpu = statistics.median(run["cpu_ms"] for run in off) / statistics.median(run["cpu_ms"] for run in on)
    verdict = "meets" if ratio >= GOAL else "**below**"
    return (
        f"**Usage counting on ÷ off (issue 20): {ratio:.2f}** (the main server ÷ an `APIKEYS_USAGE=off` server with"
        f" the same settings and database, the same key, measured right after it in each round); {verdict} the"
        f" {GOAL} goal. Per round: {rounds}; by server CPU per request (off ÷ on): {cpu:.2f}."
    )
