"""`make bench`: apikeys under gunicorn against a plain Flask endpoint, in-process verification, the size sweep.

Prints one markdown report on stdout (progress goes to stderr); with
``--write docs/benchmarks.md`` it also replaces the generated part of that file.
Everything runs on 127.0.0.1 in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import inprocess
import phases
import render
import report
from loadgen import LoadGenerator
from servers import Server

from apikeys import config as config_module
from apikeys.tokens import issue_token
from apikeys.verify import API_KEY_HEADER

ROOT = Path(__file__).resolve().parent.parent
TENANT = "bench"
STARTED = time.monotonic()


def log(message: str) -> None:
    """Say what the benchmark is doing, on stderr."""
    print(f"[bench {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line; ``--quick`` shortens everything for a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating plain/apikeys rounds (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers for both servers (default 4)")
    parser.add_argument("--uncached-keys", type=int, default=48, help="distinct keys for the uncached phase")
    parser.add_argument("--flood-attempts", type=int, default=300)
    parser.add_argument("--flood-clients", type=int, default=16)
    parser.add_argument("--verify-calls", type=int, default=5000, help="timed in-process verify calls")
    parser.add_argument("--sizes", default="1000,100000,1000000", help="size sweep, comma-separated key counts")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s phases, sizes 1000,10000")
    parser.add_argument("--skip-http", action="store_true", help="skip everything that needs gunicorn")
    parser.add_argument("--skip-sweep", action="store_true", help="skip the size sweep")
    parser.add_argument("--profile", action="store_true", help="cProfile cached verify_api_key (to stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    parser.add_argument("--write", type=Path, help="also write the report into this markdown file")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 2.0)
        args.uncached_keys = min(args.uncached_keys, 12)
        args.verify_calls = min(args.verify_calls, 2000)
        if args.sizes == parser.get_default("sizes"):
            args.sizes = "1000,10000"
    args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if not 1 <= args.rounds <= 10 or not 1 <= args.duration <= 120 or any(s < 1 or s > 10_000_000 for s in args.sizes):
        parser.error("rounds 1-10, duration 1-120 s, sizes 1-10,000,000")
    return args


def http_benchmarks(args: argparse.Namespace, tmp: Path, generator: LoadGenerator) -> dict:
    """Run every phase that needs gunicorn: one server at a time, plain and apikeys alternating."""
    jwt_secret = secrets.token_urlsafe(48)
    common = {"APIKEYS_BCRYPT_ROUNDS": "12", "APIKEYS_JWT_SECRET": jwt_secret}
    service_env = common | {
        "APIKEYS_INSTANCE_PATH": str(tmp / "service"),
        "APIKEYS_DATABASE_URL": f"sqlite:///{tmp / 'service' / 'apikeys.sqlite3'}",
    }
    # The plain app runs under the same gunicorn.conf.py, whose on_starting hook builds an apikeys
    # database in the master: give it its own, so the two configurations stay identical.
    plain_env = common | {
        "APIKEYS_INSTANCE_PATH": str(tmp / "plain"),
        "APIKEYS_DATABASE_URL": f"sqlite:///{tmp / 'plain' / 'apikeys.sqlite3'}",
    }
    token = issue_token(config_module.DEFAULTS | {"APIKEYS_JWT_SECRET": jwt_secret}, TENANT, 3 * 3600)
    service = {"app": "app:app", "env": service_env, "log_dir": tmp, "workers": args.workers}
    plain = {"app": "bench.plain_app:app", "env": plain_env, "log_dir": tmp, "workers": args.workers}
    results: dict = {"plain": [], "cached": [], "dashboard": [], "floods": []}

    with Server(**service, ready_path="/healthz") as server:
        count = 1 + args.uncached_keys + 2
        log(f"creating {count} keys through the API (bcrypt 12)")
        started = time.monotonic()
        created = phases.create_keys(server.port, token, count)
        results["create_s"] = time.monotonic() - started
        results["keys_created"] = count
        cached_key, victims = created[0], created[-2:]
        log(f"uncached first verification of {args.uncached_keys} distinct keys")
        results["uncached"] = phases.uncached(
            server.port, created[1 : 1 + args.uncached_keys], args.workers, budget_s=max(3 * args.duration, 20)
        )
        for victim, everywhere in zip(victims, (False, True), strict=True):
            log(f"wrong-secret flood: {args.flood_attempts} attempts from {args.flood_clients} clients")
            results["floods"].append(
                phases.flood(server.port, victim, args.flood_attempts, args.flood_clients, everywhere)
            )

    verify_headers = {API_KEY_HEADER: cached_key["full_key"]}
    dashboard_headers = {"Authorization": f"Bearer {token}"}
    warmup = min(2.0, args.duration)
    for round_number in range(1, args.rounds + 1):
        log(f"round {round_number}/{args.rounds}: plain Flask endpoint")
        with Server(**plain, ready_path="/plain") as server:
            generator.run(server.port, "/plain", {}, warmup)
            results["plain"].append(generator.measure(server, "/plain", {}, args.duration))
        log(f"round {round_number}/{args.rounds}: cached /verify, then GET /dashboard/api-keys")
        with Server(**service, ready_path="/healthz") as server:
            generator.run(server.port, "/verify", verify_headers, warmup)  # each worker pays its one bcrypt here
            results["cached"].append(generator.measure(server, "/verify", verify_headers, args.duration))
            path = "/dashboard/api-keys?page=1&limit=20"
            results["dashboard"].append(generator.measure(server, path, dashboard_headers, args.duration))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark, print the report, and write it when asked."""
    args = parse_args(argv)
    generator = LoadGenerator(args.generator, args.connections, args.threads)
    machine = report.machine()
    tmp = Path(tempfile.mkdtemp(prefix="apikeys-bench-"))
    results: dict = {"args": args, "machine": machine, "generator": generator.describe()}
    try:
        if not args.skip_http:
            results["http"] = http_benchmarks(args, tmp, generator)
        log(f"in-process: {args.verify_calls} cached verify_api_key calls and as many bare SELECTs")
        results["inprocess"] = inprocess.verify_versus_select(tmp / "inprocess", args.verify_calls, args.profile)
        if not args.skip_sweep:
            results["sweep"] = []
            for size in args.sizes:
                log(f"size sweep: {size:,} keys in one tenant")
                results["sweep"].append(
                    inprocess.sweep_one(tmp / f"sweep-{size}", size, args.verify_calls, page_repeats=21)
                )
                shutil.rmtree(tmp / f"sweep-{size}", ignore_errors=True)  # up to ~300 MB each
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    machine["Load average at end"] = report.load_average()
    machine["Total run time"] = f"{time.monotonic() - STARTED:.0f} s"
    text = render.render(results)
    print(text)
    if args.write:
        report.write_doc(args.write, text, render.INTRO)
        log(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
