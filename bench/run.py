"""`make bench`: apikeys' /verify under its own gunicorn configuration against a plain Flask app under plain gunicorn.

In the same rounds bench.limits measures keys with a rate limit (embedded store, Redis) and a quota.
Prints one markdown report on stdout (progress on stderr); with ``--write docs/benchmarks.md``
it also replaces the generated part of that file. Everything runs on 127.0.0.1 in a
temporary directory that is removed at the end; the load generator is wrk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import limits
from bench import report
from bench import usage
from bench.load import STARTED
from bench.load import apikeys_server
from bench.load import create_keys
from bench.load import log
from bench.load import wrk
from bench.servers import Gunicorn
from bench.servers import call
from bench.servers import service_env
from bench.servers import token_for

HERE = Path(__file__).resolve().parent
TENANT = "bench"
TARGET_RATIO = 0.8  # issue 9: /verify at least 0.8 x the plain baseline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line; ``--quick`` shortens everything for a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measured wrk run (default 6)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved baseline/apikeys runs each (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers of both servers (default 4)")
    parser.add_argument("--keys", type=int, default=16, help="keys for the cold/warm and wrong/right phases")
    parser.add_argument("--calls", type=int, default=3000, help="timed in-process verify_api_key calls")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s runs, 2 rounds, 6 keys")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument("--write", type=Path, help="also write the report into this markdown file")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.keys, args.calls = min(args.duration, 3.0), 2, 6, 1000
    if not 1 <= args.rounds <= 10 or not 1 <= args.duration <= 120 or not 1 <= args.keys <= 200:
        parser.error("rounds 1-10, duration 1-120 s, keys 1-200")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: `apt-get install wrk` (make bench does it)")
    return args


def wrong_keys(created: list[dict], per_key: int) -> list[str]:
    """Return well-formed keys with valid checksums and wrong secrets, spread round-robin over ``created``."""
    from apikeys import keys  # the key format; only here, where the benchmark has to forge keys

    return [f"{key['publicKey']}.{keys.new_secret(key['environment'])}" for _ in range(per_key) for key in created]


def timed_verifications(base: str, full_keys: list[str]) -> list[float]:
    """Verify each key once, one request at a time; return the milliseconds each took (all must be 200)."""
    times = []
    for full_key in full_keys:
        started = time.perf_counter()
        status, _ = call(base, "GET", "/verify", api_key=full_key)
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"a valid key answered {status}")
    return times


def in_process(env: dict[str, str], full_key: str, calls: int) -> dict:
    """Time ``verify_api_key(full_key)`` inside an app context, on the database the server made."""
    import apikeys

    # The server's database and secrets (a host with another verifier key must not start).
    config = {name: env[name] for name in ("APIKEYS_DATABASE_URL", "APIKEYS_JWT_SECRET", "APIKEYS_VERIFIER_KEY")}
    app = apikeys.create_app(config, instance_path=env["APIKEYS_INSTANCE_PATH"])
    samples = []
    with app.app_context():
        for number in range(calls + 200):
            started = time.perf_counter_ns()
            apikeys.verify_api_key(full_key)
            if number >= 200:  # the first calls warm up connections and caches
                samples.append((time.perf_counter_ns() - started) / 1000)
    return {"calls": calls, "p50_us": statistics.median(samples), "p99_us": report.percentile(samples, 99)}


def measure(args, tmp: Path) -> dict:
    """Start both servers, run every phase, and return the raw results."""
    jwt_secret = secrets.token_urlsafe(48)
    instance = tmp / "apikeys"
    database_url = f"sqlite:///{instance / 'apikeys.sqlite3'}"
    env = service_env(database_url, jwt_secret, instance, APIKEYS_BCRYPT_ROUNDS="12")
    plain_dir = tmp / "plain"
    plain_dir.mkdir()
    shutil.copy(HERE / "plain_app.py", plain_dir / "app.py")
    bare_dir = tmp / "bare"
    bare_dir.mkdir()
    shutil.copy(HERE / "bare_app.py", bare_dir / "app.py")
    results: dict = {"baseline": [], "ceiling": [], "verify": []}
    with contextlib.ExitStack() as stack:
        service = apikeys_server(tmp, env, args)
        stack.enter_context(service)
        plain = Gunicorn(tmp, {}, workers=args.workers, config=None, access_log=False, cwd=plain_dir)
        stack.callback(plain.stop)
        plain.start("/plain")
        bare = Gunicorn(tmp, {}, workers=args.workers, config=None, access_log=False, cwd=bare_dir)
        stack.callback(bare.stop)
        bare.start("/bare")
        log(f"apikeys on {service.url}, baseline on {plain.url}; creating {1 + 2 * args.keys} keys (bcrypt 12)")
        token = token_for(jwt_secret, TENANT, 3600)
        created = create_keys(service.url, token, 1 + 2 * args.keys)
        warm, cold, spread = created[0]["fullKey"], created[1 : 1 + args.keys], created[1 + args.keys :]

        log("warm-up: 2 s on each server")
        wrk(plain, "/plain", 2, args)
        wrk(bare, "/bare", 2, args)
        wrk(service, "/verify", 2, args, [warm], tmp)
        limited = limits.LimitedKeys(stack, tmp, env, args, service, token)
        limited.warm_up()
        counting_off = usage.UsageOff(stack, tmp, env, args, warm)
        counting_off.run(2)
        for number in range(1, args.rounds + 1):
            log(f"round {number}/{args.rounds}: baseline, ceiling, apikeys /verify, limited keys ({args.duration:g} s)")
            results["baseline"].append(wrk(plain, "/plain", args.duration, args))
            results["ceiling"].append(wrk(bare, "/bare", args.duration, args))
            results["verify"].append(wrk(service, "/verify", args.duration, args, [warm], tmp))
            results.setdefault("usage_off", []).append(counting_off.run(args.duration))
            limited.measure_round(results)
        results["limit_counts"] = limited.counted()

        log(f"cold against warm: {args.keys} just-written keys, one request at a time")
        results["cold"] = timed_verifications(service.url, [key["fullKey"] for key in cold])
        results["second"] = timed_verifications(service.url, [key["fullKey"] for key in cold])
        results["warm"] = timed_verifications(service.url, [warm] * args.keys)

        log(f"right secrets over {args.keys} keys (after a 3 s warm-up), then a wrong-secret flood over the same keys")
        wrk(service, "/verify", 3, args, [key["fullKey"] for key in spread], tmp)
        results["right"] = wrk(service, "/verify", args.duration, args, [key["fullKey"] for key in spread], tmp)
        results["wrong"] = wrk(service, "/verify", args.duration, args, wrong_keys(spread, 20), tmp)

        log(f"in process: {args.calls} verify_api_key calls")
        results["in_process"] = in_process(env, warm, args.calls)
    return results


def ms(microseconds: float) -> str:
    """Format microseconds as milliseconds."""
    return f"{microseconds / 1000:.2f}"


def render(results: dict, args, machine: dict[str, str]) -> str:
    """Return the generated report."""
    baseline_rps = statistics.median(run["rps"] for run in results["baseline"])
    verify_rps = statistics.median(run["rps"] for run in results["verify"])
    ratio = verify_rps / baseline_rps
    pairs = list(zip(results["baseline"], results["verify"], strict=True))
    round_ratios = [verify["rps"] / base["rps"] for base, verify in pairs if base["rps"]]
    # CPU per request moves much less than req/s when other work shares the machine.
    cpu_ratio = statistics.median(r["cpu_ms"] for r in results["baseline"]) / max(
        statistics.median(r["cpu_ms"] for r in results["verify"]), 1e-9
    )
    ceiling_rps = statistics.median(run["rps"] for run in results["ceiling"])
    ceiling_rounds = [
        v["rps"] / c["rps"] for c, v in zip(results["ceiling"], results["verify"], strict=True) if c["rps"]
    ]
    cores = os.cpu_count() or 1
    busy = float(machine["Load average at start (1/5/15 min)"].split(" / ")[0]) > cores / 4

    def median_row(name: str, runs: list[dict]) -> list[str]:
        if not all(run["requests"] for run in runs):
            return [name, "0", "—", "—", "—", "—", "no answer within the run"]
        row = [name, f"{statistics.median(run['rps'] for run in runs):,.0f}"]
        row += [ms(statistics.median(run[p] for run in runs)) for p in ("p50_us", "p90_us", "p99_us")]
        return row + [f"{statistics.median(run['cpu_ms'] for run in runs):.2f}", str(sum(r["non_2xx"] for r in runs))]

    def latency_row(name: str, times: list[float]) -> list[str]:
        return [name, *(f"{report.percentile(times, p):.1f}" for p in (50, 90, 99)), f"{max(times):.1f}"]

    every = [
        [
            str(n),
            name,
            f"{run['rps']:,.0f}",
            ms(run["p50_us"]),
            ms(run["p90_us"]),
            ms(run["p99_us"]),
            f"{run['cpu_ms']:.2f}",
        ]
        for n, (base, verify) in enumerate(pairs, start=1)
        for name, run in (("baseline", base), ("apikeys /verify", verify))
    ]
    load = [median_row("right secrets, round-robin", [results["right"]])]
    load.append(median_row("wrong secrets (valid checksums), round-robin", [results["wrong"]]))
    cold = [latency_row("first verification of a just-written key", results["cold"])]
    cold.append(latency_row("second verification of that key", results["second"]))
    cold.append(latency_row("a key verified thousands of times before", results["warm"]))
    in_process = results["in_process"]
    header = ["Server", "req/s (median)", "p50 ms", "p90 ms", "p99 ms", "server CPU ms/req", "non-2xx"]
    verdict = "meets" if ratio >= TARGET_RATIO else "**below**"
    return "\n\n".join(
        [
            "## Results",
            f"Run of {machine['Date (UTC)']} UTC: {report.command('bench.run', sys.argv[1:], 'bench', 'BENCH_ARGS')}.",
            f"**apikeys `/verify` ÷ baseline: {ratio:.2f}** ({verify_rps:,.0f} ÷ {baseline_rps:,.0f} req/s, medians of"
            f" {args.rounds} interleaved runs each); {verdict} the {TARGET_RATIO} target of issue 9. Per round:"
            f" {', '.join(f'{r:.2f}' for r in round_ratios)}; by server CPU per request (baseline ÷ apikeys):"
            f" {cpu_ratio:.2f}."
            + (
                f" **The machine was busy** (load average {machine['Load average at start (1/5/15 min)']} on"
                f" {cores} cores at the start): the req/s figures are noisy, the CPU ratio is the steadier one."
                if busy
                else ""
            ),
            f"**apikeys `/verify` ÷ ceiling (a bare WSGI callable, same gunicorn): {verify_rps / ceiling_rps:.2f}**"
            f" ({verify_rps:,.0f} ÷ {ceiling_rps:,.0f} req/s); per round:"
            f" {', '.join(f'{r:.2f}' for r in ceiling_rounds)}.",
            limits.headline(results),
            usage.headline(results),
            "### apikeys `/verify` against the baseline",
            f"wrk, {args.threads} threads, {args.connections} connections, {args.duration:g} s per run after a 2 s"
            f" warm-up, from the same machine; every server `-w {args.workers}` sync workers, measured in turn"
            f" (baseline, ceiling, apikeys, baseline, …). Each column is the median over the {args.rounds} runs.",
            report.table(
                header,
                [
                    median_row("baseline: plain Flask `GET /plain`", results["baseline"]),
                    median_row("ceiling: bare WSGI `GET /bare`", results["ceiling"]),
                    median_row("apikeys `GET /verify`, one key", results["verify"]),
                ],
            ),
            report.table(["Run", "Server", "req/s", "p50 ms", "p90 ms", "p99 ms", "server CPU ms/req"], every),
            *limits.render(results, args),
            "### Cold and warm keys",
            f"{args.keys} keys created through the API just before, each verified once and then again, one request at"
            " a time on a new connection (client-side milliseconds); the last row is the key of the load runs.",
            report.table(["`GET /verify`", "p50 ms", "p90 ms", "p99 ms", "max ms"], cold),
            "### Wrong secrets cost what right ones cost",
            f"wrk over {args.keys} keys: their current secrets (after a 3 s warm-up), then 20 distinct wrong secrets"
            f" per key with valid checksums, {args.duration:g} s each. Every wrong-secret answer should be a 401."
            " Latencies count answered requests only.",
            report.table(["`GET /verify`", *header[1:]], load),
            "### In process",
            f"`apikeys.verify_api_key(full_key)` inside `app.app_context()` on the server's SQLite file, the key of"
            f" the load runs: p50 {in_process['p50_us']:.1f} µs, p99 {in_process['p99_us']:.1f} µs"
            f" ({in_process['calls']:,} timed calls after 200 warm-up calls).",
            "### Machine",
            report.table(["", ""], [[key, value] for key, value in machine.items()]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the report, and write it when asked."""
    args = parse_args(argv)
    machine = report.machine()
    tmp = Path(tempfile.mkdtemp(prefix="apikeys-bench-"))
    try:
        results = measure(args, tmp)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    machine["Load average at end"] = report.load_average()
    machine["Runs"] = f"{args.rounds} per server, interleaved; total time {time.monotonic() - STARTED:.0f} s"
    text = render(results, args, machine)
    print(text)
    if args.write:
        report.write_doc(args.write, text, "bench", "Benchmarks")
        log(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
