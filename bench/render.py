"""Turn the results of bench/run.py into the markdown report, targets and verdicts included."""

from __future__ import annotations

import statistics
from collections import Counter

from report import fmt
from report import table
from report import verdict

INTRO = """# Benchmarks

`make bench` (or `make bench BENCH_ARGS="--quick"` for a short smoke run) measures apikeys under
gunicorn against a plain Flask endpoint under the same gunicorn configuration, times verification
in process, and sweeps the number of keys in one tenant. `make bench BENCH_ARGS="--write docs/benchmarks.md"`
rewrites the generated section below; text outside the markers is kept.
"""

RATIO_TARGET = 0.6
RATIO_AIM = 0.8
INPROCESS_TARGET_US = 100.0
FLOOD_TARGET_S = 15.0
FLATNESS_TARGET = 1.5


def best(runs):
    """Return the run with the most requests per second."""
    return max(runs, key=lambda run: run.rps)


def codes(counter: Counter) -> str:
    """Render a Counter of (status, code) as "200 x 12, 401 TOO_MANY_FAILED_ATTEMPTS x 3"."""
    parts = []
    for (status, code), count in sorted(counter.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        parts.append(f"{status}{' ' + code if code else ''} × {count}")
    return ", ".join(parts) or "none"


def render(results: dict) -> str:
    """Return the whole generated report."""
    args = results["args"]
    sections = ["## Results", _preamble(results)]
    targets: list[list[str]] = []
    if "http" in results:
        sections += _http(results["http"], args, targets)
    sections += _inprocess(results["inprocess"], targets)
    if "sweep" in results:
        sections += _sweep(results["sweep"], targets)
    sections[2:2] = ["### Targets", table(["Target", "Measured", "Result"], targets)]
    if "http" in results:
        sections += _every_run(results["http"])
    sections += ["### Machine", table(["", ""], [[key, value] for key, value in results["machine"].items()])]
    return "\n\n".join(sections) + "\n"


def _preamble(results: dict) -> str:
    args = results["args"]
    lines = [
        f"Run of {results['machine']['Date (UTC)']} UTC{' (`--quick` smoke run)' if args.quick else ''}.",
        f"Load generator: {results['generator']}. gunicorn `-c gunicorn.conf.py -w {args.workers}` (sync workers)",
        "for both servers, started one at a time; bcrypt rounds 12; SQLite in a temporary directory.",
        f"Each load run lasts {args.duration:g} s after a warm-up; the two servers alternate for {args.rounds}",
        "round(s) (plain, apikeys, plain, apikeys, …) and each HTTP row shows the **best** run (highest req/s);",
        "every run is listed under *Every run*. The service logs one line per request (to a file), as in production.",
    ]
    return "\n".join(lines)


def _http(http: dict, args, targets: list[list[str]]) -> list[str]:
    plain, cached, dashboard = best(http["plain"]), best(http["cached"]), best(http["dashboard"])
    ratio = cached.rps / plain.rps if plain.rps else 0.0
    cpu_ratio = _cpu_ratio(http["plain"], http["cached"])
    uncached = http["uncached"]
    flood_rows = []
    rows = [
        _load_row("plain Flask JSON `GET /plain`", plain),
        _load_row("cached `GET /verify`", cached),
        [
            "**cached `/verify` ÷ plain**",
            f"**{ratio:.2f}**",
            "",
            "",
            "",
            f"{cpu_ratio:.2f}" if cpu_ratio else "",
            f"target ≥ {RATIO_TARGET}, aim {RATIO_AIM}; the CPU column is plain ÷ `/verify` CPU per request",
        ],
        [
            "uncached first `GET /verify` (bcrypt 12)",
            fmt(uncached["rps"]),
            fmt(uncached["p50_ms"]),
            fmt(uncached["p99_ms"]),
            str(sum(n for status, n in uncached["statuses"].items() if not 200 <= status < 300)),
            "",
            f"{uncached['requests']} distinct keys, {uncached['concurrency']} concurrent clients",
        ],
    ]
    for flood in http["floods"]:
        summary = flood.summary
        rows.append(
            [
                f"wrong-secret flood (holder {flood.warmup.split(' (')[0]})",
                fmt(summary["rps"]),
                fmt(summary["p50_ms"]),
                fmt(summary["p99_ms"]),
                str(sum(flood.codes.values()) - sum(n for (s, _), n in flood.codes.items() if 200 <= s < 300)),
                "",
                f"{flood.attempts} attempts in {flood.seconds:.1f} s; all refused by design",
            ]
        )
        holder_ok = set(flood.holder) == {(200, None)}
        flood_rows.append(
            [
                flood.warmup,
                str(flood.attempts),
                f"{flood.seconds:.2f}",
                str(flood.codes.get((401, "INVALID_API_KEY"), 0)),
                str(flood.codes.get((401, "TOO_MANY_FAILED_ATTEMPTS"), 0)),
                codes(Counter({k: v for k, v in flood.codes.items() if k[0] != 401})),
                codes(flood.holder),
                fmt(flood.holder_max_ms),
                verdict(flood.seconds < FLOOD_TARGET_S and holder_ok),
            ]
        )
        targets.append(
            [
                f"flood ({flood.warmup.split(' (')[0]}): {flood.attempts} wrong secrets from {args.flood_clients}"
                f" clients < {FLOOD_TARGET_S:g} s, holder always 200",
                f"{flood.seconds:.2f} s; holder: {codes(flood.holder)}",
                verdict(flood.seconds < FLOOD_TARGET_S and holder_ok),
            ]
        )
    rows.append(_load_row("`GET /dashboard/api-keys?page=1&limit=20`", dashboard))
    targets[:0] = [
        [
            f"cached `/verify` ≥ {RATIO_TARGET} × plain (aim {RATIO_AIM})",
            f"{ratio:.2f} ({fmt(cached.rps, 0)} ÷ {fmt(plain.rps, 0)} req/s)",
            verdict(ratio >= RATIO_TARGET) + ("" if ratio >= RATIO_AIM else f" (below the {RATIO_AIM} aim)"),
        ],
        [
            "zero non-2xx under load (cached `/verify`, every run)",
            ", ".join(f"{run.non_2xx} non-2xx / {run.socket_errors} socket errors" for run in http["cached"]),
            verdict(all(run.non_2xx == 0 and run.socket_errors == 0 for run in http["cached"])),
        ],
    ]
    return [
        "### HTTP under gunicorn",
        table(["Benchmark", "req/s", "p50 ms", "p99 ms", "non-2xx", "server CPU ms/req", "Notes"], rows),
        f"Keys for these runs were created through `POST /dashboard/api-keys`: {http['keys_created']} keys in "
        f"{http['create_s']:.1f} s.",
        "### Wrong-secret flood",
        "Distinct, well-formed wrong secrets with valid checksums (`keys.new_secret` under the victim's public key),"
        " so only the hash check can refuse them; meanwhile the holder sends the correct key every 50 ms.",
        table(
            [
                "Holder before the flood",
                "Attempts",
                "Total s",
                "401 INVALID_API_KEY",
                "401 TOO_MANY_FAILED_ATTEMPTS",
                "Other",
                "Holder answers",
                "Holder max ms",
                "Result",
            ],
            flood_rows,
        ),
    ]


def _cpu(run) -> str:
    value = run.cpu_ms_per_request
    return "" if value is None else f"{value:.2f}"


def _cpu_ratio(plain_runs, cached_runs) -> float | None:
    """Return plain ÷ cached server CPU per request, each the median over its runs."""
    plain = [run.cpu_ms_per_request for run in plain_runs if run.cpu_ms_per_request]
    cached = [run.cpu_ms_per_request for run in cached_runs if run.cpu_ms_per_request]
    if not plain or not cached:
        return None
    return statistics.median(plain) / statistics.median(cached)


def _load_row(name: str, run) -> list[str]:
    return [
        name,
        fmt(run.rps),
        fmt(run.p50_ms, 2),
        fmt(run.p99_ms, 2),
        str(run.non_2xx),
        _cpu(run),
        f"{run.requests:,} requests" + (f", {run.socket_errors} socket errors" if run.socket_errors else ""),
    ]


def _inprocess(measured: dict, targets: list[list[str]]) -> list[str]:
    ratio = measured["verify_p50_us"] / measured["select_p50_us"]
    targets.append(
        [
            f"in-process cached `verify_api_key` median < {INPROCESS_TARGET_US:g} µs (SQLite)",
            f"{measured['verify_p50_us']:.1f} µs",
            verdict(measured["verify_p50_us"] < INPROCESS_TARGET_US),
        ]
    )
    rows = [
        ["cached `verify_api_key(full_key)`", f"{measured['verify_p50_us']:.1f}", f"{measured['verify_p99_us']:.1f}"],
        [
            "bare `SELECT` of the row by public key (same engine, connect per call)",
            f"{measured['select_p50_us']:.1f}",
            f"{measured['select_p99_us']:.1f}",
        ],
        ["**ratio verify ÷ SELECT**", f"**{ratio:.2f}**", ""],
    ]
    return [
        "### In-process verification",
        f"{measured['calls']:,} timed calls each (`time.perf_counter_ns`, after 500 warm-up calls), inside"
        " `app.app_context()`, on a SQLite file.",
        table(["Call", "p50 µs", "p99 µs"], rows),
    ]


def _sweep(sweep: list[dict], targets: list[list[str]]) -> list[str]:
    rows = [
        [
            f"{row['size']:,}",
            f"{row['build_s']:.1f}",
            f"{row['db_mb']:.0f}",
            f"{row['verify_p50_us']:.1f}",
            f"{row['verify_p99_us']:.1f}",
            f"{row['page1_ms']:.2f}",
            f"{row['last_page_ms']:.2f} (page {row['last_page']:,})",
        ]
        for row in sweep
    ]
    lines = [
        "### Size sweep (SQLite, all keys in one tenant)",
        "Filler rows are inserted in bulk (one `executemany` transaction, one bcrypt-4 hash shared by all);"
        " the measured key is a real bcrypt-12 key. List pages are timed through the Flask test client"
        " (`GET /dashboard/api-keys?page=N&limit=20`, median of up to 21 requests for page 1, fewer for the last).",
        table(["Keys", "Build s", "DB MiB", "verify p50 µs", "verify p99 µs", "page 1 ms", "last page ms"], rows),
    ]
    if len(sweep) >= 2:
        first, last = sweep[0], sweep[-1]
        flat = last["verify_p50_us"] / first["verify_p50_us"]
        page1 = last["page1_ms"] / first["page1_ms"]
        deep = last["last_page_ms"] / first["last_page_ms"]
        targets.append(
            [
                f"verification flat from {first['size']:,} to {last['size']:,} keys (≤ {FLATNESS_TARGET}×)",
                f"{flat:.2f}×",
                verdict(flat <= FLATNESS_TARGET),
            ]
        )
        lines.append(
            f"From {first['size']:,} to {last['size']:,} keys: verification ×{flat:.2f}, list page 1 ×{page1:.1f},"
            f" last page ×{deep:.1f}."
            + (" **List pages degrade with the tenant's size.**" if max(page1, deep) > FLATNESS_TARGET else "")
        )
    return lines


def _every_run(http: dict) -> list[str]:
    rows = []
    for name, runs in (("plain", http["plain"]), ("cached /verify", http["cached"]), ("dashboard", http["dashboard"])):
        for index, run in enumerate(runs, start=1):
            rows.append(
                [
                    str(index),
                    name,
                    fmt(run.rps),
                    fmt(run.p50_ms, 2),
                    fmt(run.p99_ms, 2),
                    str(run.non_2xx),
                    str(run.socket_errors),
                    _cpu(run),
                ]
            )
    ratios = [c.rps / p.rps for p, c in zip(http["plain"], http["cached"], strict=True) if p.rps]
    return [
        "### Every run",
        table(["Round", "Server", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket errors", "server CPU ms/req"], rows),
        "Per-round ratio cached `/verify` ÷ plain: " + ", ".join(f"{ratio:.2f}" for ratio in ratios) + ".",
    ]
