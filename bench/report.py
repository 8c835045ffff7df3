"""The machine a run happened on, and the markdown that bench/run.py prints and writes."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from datetime import UTC
from datetime import datetime
from importlib import metadata
from pathlib import Path

from loadgen import wrk_version

BEGIN = "<!-- bench:begin (written by bench/run.py --write; edit outside these markers) -->"
END = "<!-- bench:end -->"


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> str:
    """Return total memory from /proc/meminfo, in GiB."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def version(name: str) -> str:
    """Return an installed package's version, or "not installed"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """Describe the machine and the software a run measures."""

    return {
        "Date (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "CPU": cpu_model(),
        "Cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable by this process)",
        "Memory": memory_gib(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "SQLite": sqlite3.sqlite_version,
        "gunicorn": version("gunicorn"),
        "Flask / flask-smorest": f"{version('flask')} / {version('flask-smorest')}",
        "SQLAlchemy": version("sqlalchemy"),
        "bcrypt": version("bcrypt"),
        "wrk": wrk_version(),
        "Load average at start": load_average(),
    }


def table(header: list[str], rows: list[list[str]]) -> str:
    """Render a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """Return PASS or FAIL."""
    return "PASS" if ok else "**FAIL**"


def fmt(value: float, digits: int = 1) -> str:
    """Format a number with thousands separators and ``digits`` decimals."""
    return f"{value:,.{digits}f}"


def write_doc(path: Path, generated: str, intro: str) -> None:
    """Put ``generated`` between the markers in ``path``, keeping what people wrote around them."""
    block = f"{BEGIN}\n{generated.rstrip()}\n{END}\n"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            before, rest = text.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            after = after.lstrip("\n")
            path.write_text(before + block + ("\n" + after if after else ""), encoding="utf-8")
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(intro.rstrip() + "\n\n" + block, encoding="utf-8")
