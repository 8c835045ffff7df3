"""What bench.run and bench.soak share: the machine a run happened on, percentiles, tables, the docs writer."""

from __future__ import annotations

import math
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
from datetime import UTC
from datetime import datetime
from importlib import metadata
from pathlib import Path


def percentile(values: list[float], percent: float) -> float:
    """Return the nearest-rank percentile (0-100) of unsorted ``values``, 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * percent / 100) - 1)]


def _first_line_of(path: str, prefix: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return next((line.split(":", 1)[1].strip() for line in file if line.startswith(prefix)), None)
    except OSError:
        return None


def version(name: str) -> str:
    """Return an installed package's version, or "not installed"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def wrk_version() -> str:
    """Return wrk's version line, or "not installed"."""
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return (out.stdout + out.stderr).split(" Copyright")[0].strip() or "unknown"


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> dict[str, str]:
    """Describe the machine and the software a run measures, before it starts."""
    memory = _first_line_of("/proc/meminfo", "MemTotal")
    return {
        "Date (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "CPU": _first_line_of("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "Cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable by this process)",
        "Memory": f"{int(memory.split()[0]) / 2**20:.1f} GiB" if memory else "unknown",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "SQLite": sqlite3.sqlite_version,
        "gunicorn": version("gunicorn"),
        "Flask / werkzeug": f"{version('flask')} / {version('werkzeug')}",
        "SQLAlchemy": version("sqlalchemy"),
        "wrk": wrk_version(),
        "Load average at start (1/5/15 min)": load_average(),
    }


def command(module: str, argv: list[str], make_target: str, make_variable: str) -> str:
    """Return the command that produced a report, as the person typed it."""
    direct = shlex.join([".venv/bin/python", "-m", module, *argv])
    if os.environ.get("MAKELEVEL"):
        return f'`make {make_target} {make_variable}="{shlex.join(argv)}"` (runs `{direct}`)'
    return f"`{direct}`"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Render a markdown table; the first column left-aligned, the others right-aligned."""
    align = ["---"] + ["--:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def write_doc(path: Path, text: str, name: str, title: str) -> None:
    """Put ``text`` between ``name``'s markers in ``path``, keeping what people wrote around them."""
    begin = f"<!-- {name}:begin (written by `python -m bench.{name} --write`; edit outside these markers) -->"
    end = f"<!-- {name}:end -->"
    current = path.read_text(encoding="utf-8") if path.exists() else f"# {title}\n\n{begin}\n{end}\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + begin + "\n" + text.rstrip() + "\n" + end + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + f"\n\n{begin}\n{text.rstrip()}\n{end}\n"
    path.write_text(current, encoding="utf-8")
