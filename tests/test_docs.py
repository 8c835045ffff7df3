"""Every document (README.md, docs/, examples/README.md) agrees with the code where the code can say: the metrics'
result labels, the identity headers /verify sends, its status codes, the options of `apikeys serve` and the paths
the app serves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from apikeys import create_app
from apikeys.cli.main import main as apikeys_cli
from apikeys.metrics import RESULTS
from apikeys.verification import headers
from apikeys.verification.extension import get_engine

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
API_MD = ROOT / "docs" / "api.md"
DEPLOYMENT_MD = ROOT / "docs" / "deployment.md"
IDENTITY_HEADERS = {headers.KEY_ID, headers.TENANT_ID, headers.ENVIRONMENT, headers.SCOPES}
# The documents of the bench scripts, whose options are those scripts', not apikeys'.
BENCH_DOCUMENTS = {"benchmarks.md": "bench.run", "soak.md": "bench.soak"}


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose(path: Path) -> str:
    """The text of ``path`` without its fenced code blocks."""
    return re.sub(r"^ *```.*?^ *```[^\n]*$", "", path.read_text(), flags=re.S | re.M)


def units(path: Path, whole_tables: bool = True) -> list[str]:
    """The prose of ``path`` cut into paragraphs, list items and tables (whole, or row by row), each one string."""
    found, current, in_table = [], [], False
    for line in prose(path).splitlines():
        is_table = line.lstrip().startswith("|")
        starts_item = re.match(r"\s*(?:[-*]|\d+\.) ", line) is not None
        new_row = is_table and not whole_tables
        if not line.strip() or is_table != in_table or (starts_item and not is_table) or new_row:
            if current:
                found.append(" ".join(current))
            current = []
        in_table = is_table
        if line.strip():
            current.append(line.strip())
    if current:
        found.append(" ".join(current))
    return found


def result_labels(path: Path) -> set[str]:
    """The metrics result labels ``path`` names: `result="x"`, and the list in "by result (`a`, `b`, ...)"."""
    labels = set()
    for unit in units(path):
        labels.update(re.findall(r'\bresult="?([a-z_]+)', unit))
        for listed in re.findall(r"\bresults?\s*\(([^)]*)\)", unit):
            labels.update(re.findall(r"`([a-z_]+)`", listed))
    return labels


def test_every_result_label_the_docs_name_is_one_the_code_counts():
    named = {(name(path), label) for path in DOCUMENTS for label in result_labels(path)}
    assert len(named) >= 5  # the list in docs/api.md at least: the rule finds something
    assert sorted(f"{where}: {label}" for where, label in named if label not in RESULTS.values()) == []


def test_every_result_label_the_code_counts_is_in_api_md():
    assert set(RESULTS.values()) - result_labels(API_MD) == set()


def identity_headers_named(text: str) -> set[str]:
    return {header for header in IDENTITY_HEADERS if re.search(rf"(?<![\w-]){re.escape(header)}(?![\w-])", text, re.I)}


def test_wherever_the_docs_list_identity_headers_they_list_all_four():
    """A paragraph, list item or table naming two or more of the headers /verify answers with names every one."""
    lists, incomplete = 0, []
    for path in DOCUMENTS:
        for unit in units(path):
            named = identity_headers_named(unit)
            if len(named) >= 2:
                lists += 1
                if named != IDENTITY_HEADERS:
                    incomplete.append(f"{name(path)}: lacks {sorted(IDENTITY_HEADERS - named)} in: {unit[:100]}…")
    assert lists >= 5
    assert incomplete == []


def sentences(path: Path) -> list[tuple[str, str]]:
    """Every (paragraph, sentence) of the prose of ``path``."""
    return [
        (unit, sentence)
        for unit in units(path, whole_tables=False)
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", unit)
    ]


def test_no_doc_says_verify_never_answers_429_or_5xx():
    """/verify answers 503 VERIFICATION_BUSY (and 400 for a malformed required scope): no doc may deny it."""
    wrong = []
    for path in DOCUMENTS:
        for unit, sentence in sentences(path):
            if "/verify" not in unit:
                continue
            never = re.search(r"\bnever\b.*\b(?:429|5xx|5\d\d)\b", sentence, re.I)
            only = re.search(r"\bonly ever\b.*\b(?:401|403)\b", sentence, re.I)
            if never or only:
                wrong.append(f"{name(path)}: {sentence}")
    assert wrong == []


def apikeys_options(command: click.Command) -> set[str]:
    """Every option of ``command`` and of the commands below it."""
    options = {opt for param in command.params for opt in param.opts if opt.startswith("--")} | {"--help"}
    for sub in getattr(command, "commands", {}).values():
        options |= apikeys_options(sub)
    return options


def help_options(argv: list[str]) -> set[str]:
    """The long options a command's --help lists."""
    shown = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", shown.stdout))


def test_every_option_the_docs_name_on_its_own_exists():
    """A `--option` in backticks is one of apikeys' commands (of the bench script in the bench docs)."""
    known = {"apikeys": apikeys_options(apikeys_cli)}
    for module in BENCH_DOCUMENTS.values():
        known[module] = help_options([sys.executable, "-m", module])
    checked, unknown = 0, []
    for path in DOCUMENTS:
        options = known[BENCH_DOCUMENTS.get(path.name, "apikeys")]
        for option in re.findall(r"`(--[a-z][a-z-]*)[^`]*`", prose(path)):
            checked += 1
            if option not in options:
                unknown.append(f"{name(path)}: {option}")
    assert checked >= 20
    assert unknown == []


def test_every_option_the_docs_give_apikeys_serve_exists():
    """Whatever follows `apikeys serve` in a doc, prose or code, is an option `apikeys serve --help` lists."""
    options = help_options([str(ROOT / ".venv" / "bin" / "apikeys"), "serve"])
    assert {"--host", "--port", "--workers", "--dev"} <= options
    checked, unknown = 0, []
    for path in DOCUMENTS:
        for words in re.findall(r"apikeys serve((?: +--?[\w-]+(?:[ =][^\s`-][^\s`]*)?)*)", path.read_text()):
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", words):
                checked += 1
                if option not in options:
                    unknown.append(f"{name(path)}: apikeys serve {option}")
    assert checked >= 5
    assert unknown == []


@pytest.fixture
def served_paths(tmp_path) -> set[str]:
    """The first segment of every path the app serves (`/dashboard`, `/healthz`, ...), from its url_map."""
    app = create_app(
        {"APIKEYS_DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.sqlite3'}"}, instance_path=str(tmp_path / "instance")
    )
    try:
        return {"/" + rule.rule.split("/")[1] for rule in app.url_map.iter_rules()}
    finally:
        get_engine(app).dispose()


def test_deployment_md_lists_every_path_the_app_serves(served_paths):
    """docs/deployment.md's list of served paths (its paragraph naming the most of them) names every one."""
    assert {"/dashboard", "/verify", "/healthz"} <= served_paths

    def named(unit: str) -> set[str]:
        return {"/" + path.split("/")[1].rstrip(".") for path in re.findall(r"`(/[^`\s]*)`", unit)}

    listing = max(units(DEPLOYMENT_MD), key=lambda unit: len(named(unit) & served_paths))
    assert served_paths - named(listing) == set(), listing
