"""README.md and docs/: every command names a real command, option, make target and setting; every local link
resolves; the README's curl walk-through and plugin example run as written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click
import jwt
import pytest

from apikeys.cli.main import main as apikeys_cli
from apikeys.config import DEFAULTS
from apikeys.config import SETTINGS
from apikeys.config import Integer
from tests.servers import free_port
from tests.servers import inherited_env
from tests.servers import wait_for
from tests.test_plugin import ONLY_APIKEYS
from tests.test_plugin import foreign_project

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED_PORT = "http://127.0.0.1:8000"
# APIKEYS_* variables that are not settings of the service, and must each be read somewhere in the code.
EXTRAS = {
    "APIKEYS_INSTANCE_PATH": "apikeys/config.py",
    "APIKEYS_TEST_POSTGRES_URL": "bench/servers.py",
    "APIKEYS_REQUIRE_POSTGRES": "tests/servers.py",
    "APIKEYS_REQUIRE_NGINX": "tests/forward_auth/conftest.py",
    "APIKEYS_REQUIRE_TRAEFIK": "tests/forward_auth/test_traefik.py",
    "APIKEYS_CONSOLE_SCREENSHOTS": "tests/console/test_browser.py",
    "APIKEYS_REQUIRE_ENVOY": "tests/forward_auth/test_envoy.py",
    "APIKEYS_DEV": "apikeys/server/serve.py",  # what `apikeys serve --dev` sets for its gunicorn
}
# What the README's configuration table lists besides SETTINGS, each with the file that reads it.
TABLE_EXTRAS = {
    "APIKEYS_INSTANCE_PATH": "apikeys/config.py",
    "HOST": "apikeys/server/serve.py",
    "PORT": "apikeys/server/serve.py",
    "WEB_CONCURRENCY": "apikeys/server/serve.py",
    "GUNICORN_CONTROL_SOCKET": "apikeys/server/gunicorn_conf.py",
    "PROMETHEUS_MULTIPROC_DIR": "apikeys/server/gunicorn_conf.py",
}


def fenced_blocks(path: Path, languages=("sh", "bash", "shell")) -> list[str]:
    """Return the fenced code blocks of ``path`` whose info string is one of ``languages``."""
    return [
        body
        for language, body in re.findall(r"^ *```(\w*)\n(.*?)^ *```", path.read_text(), re.S | re.M)
        if language in languages
    ]


def logical_lines(block: str) -> list[str]:
    """Join backslash continuations; drop blank lines; keep comment lines (they document answers)."""
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def shell_commands() -> list[tuple[str, str]]:
    """Every (document, command line) in a shell block of README.md and docs/, comments removed."""
    found = []
    for path in DOCUMENTS:
        for block in fenced_blocks(path):
            for line in logical_lines(block):
                if not line.startswith("#"):
                    found.append((path.relative_to(ROOT).as_posix(), line))
    return found


def apikeys_invocations() -> list[tuple[str, list[str]]]:
    """Every `.venv/bin/apikeys ...` in the shell blocks, as its words (up to the end of the shell command)."""
    invocations = []
    for where, line in shell_commands():
        for match in re.finditer(r"\.venv/bin/apikeys\b([^)|;&#]*)", line):
            invocations.append((where, shlex.split(match.group(1))))
    # docs/cli.md's reference table: `keys create --tenant T ...` in its first column.
    for row in re.findall(r"^\| `([a-z][^`]*)` \|", (ROOT / "docs" / "cli.md").read_text(), re.M):
        invocations.append(("docs/cli.md table", row.replace("\\|", "|").replace("[", " ").replace("]", " ").split()))
    return invocations


def resolve(words: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """Walk apikeys' click tree along ``words``; return the command reached, its path and the options used."""
    command, path, options = apikeys_cli, [], []
    for word in words:
        if word.startswith("--"):
            options.append(word.split("=", 1)[0])
        elif isinstance(command, click.Group) and not options:
            assert word in command.commands, f"apikeys {' '.join(path)} has no command {word!r}"
            command = command.commands[word]
            path.append(word)
    return command, path, options


def test_every_apikeys_command_and_option_exists():
    invocations = apikeys_invocations()
    assert len(invocations) > 20
    for where, words in invocations:
        command, path, options = resolve(words)
        known = {opt for param in command.params for opt in param.opts} | {"--help"}
        for option in options:
            assert option in known, f"{where}: apikeys {' '.join(path)} has no option {option}"
        assert not isinstance(command, click.Group) or command is apikeys_cli and options, f"{where}: {words}"


def test_the_cli_reference_lists_every_command():
    table = {" ".join(resolve(words)[1]) for where, words in apikeys_invocations() if where == "docs/cli.md table"}
    every = {
        f"{name} {sub}" if isinstance(command, click.Group) else name
        for name, command in apikeys_cli.commands.items()
        for sub in (command.commands if isinstance(command, click.Group) else [None])
    }
    assert every <= table


def makefile_targets() -> tuple[set[str], set[str]]:
    """Return the Makefile's targets (variables expanded) and the variables it reads."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+) :?= *(.*)$", text, re.M))

    def expand(value: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: expand(variables.get(m.group(1), "")), value)

    targets = set()
    for names in re.findall(r"^([^\s#=][^:=]*):(?!=)", text, re.M):
        targets.update(expand(name) for name in names.split() if name != ".PHONY")
    return targets, set(re.findall(r"\$\((\w+)\)", text))


def test_every_make_command_names_a_target_and_its_variables():
    targets, read = makefile_targets()
    makes = [(where, shlex.split(line.split("#")[0])) for where, line in shell_commands() if line.startswith("make ")]
    assert len(makes) >= 5
    for where, words in makes:
        for word in words[1:]:
            if "=" in word:
                assert word.split("=")[0] in read, f"{where}: the Makefile does not read {word.split('=')[0]}"
            else:
                assert word in targets, f"{where}: the Makefile has no target {word!r}"


def test_every_apikeys_variable_mentioned_exists():
    mentioned = {name for path in DOCUMENTS for name in re.findall(r"\bAPIKEYS_[A-Z0-9_]+\*?", path.read_text())}
    # APIKEYS_JWT_* names a family: some setting must start with it.
    families = {name for name in mentioned if name.endswith("*")}
    assert all(any(setting.startswith(family[:-1]) for setting in SETTINGS) for family in families), families
    unknown = mentioned - families - set(SETTINGS) - set(EXTRAS)
    assert unknown == set()
    for name, source in EXTRAS.items():
        assert name in (ROOT / source).read_text(), f"{name} is documented but not read by {source}"


def configuration_table() -> dict[str, tuple[str, str]]:
    """The README's configuration table: setting name -> (default column, rule column)."""
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for names, default, rule in re.findall(r"^\| (`[^|]*`) \| ([^|]*) \| ([^|]*) \|$", section, re.M):
        for name in re.findall(r"`([A-Z_]+)`", names):
            rows[name] = (default.strip(), rule.strip())
    return rows


def test_the_configuration_table_has_every_setting_with_its_default_and_range():
    rows = configuration_table()
    assert set(rows) == set(SETTINGS) | set(TABLE_EXTRAS)
    for name, source in TABLE_EXTRAS.items():
        assert name in (ROOT / source).read_text()
    for name, (default, rule) in rows.items():
        if name not in SETTINGS:
            continue
        value = DEFAULTS[name]
        if isinstance(value, bool):
            assert default == f"`{str(value).lower()}`", name
        elif isinstance(value, int | str) and value != "":
            assert default == f"`{value}`", name
        elif isinstance(value, list) and value:
            assert default == f"`{','.join(value)}`", name
        checker = SETTINGS[name][1]
        if isinstance(checker, Integer):
            assert f"{checker.low}–{checker.high}" in rule, f"{name}: the rule must say {checker.low}–{checker.high}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^ *```.*?^ *```", "", path.read_text(), flags=re.S | re.M)
    return {slug(heading) for heading in re.findall(r"^#+ (.*)$", text, re.M)}


def test_every_local_link_resolves():
    checked, broken = 0, []
    for path in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            checked += 1
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert checked > 20
    assert broken == []


def test_the_readme_plugin_example_passes_in_a_project_of_its_own(pytester):
    (example,) = re.findall(r"```python\n(.*?)```", README.read_text().split("## Testing with the plugin")[1], re.S)
    foreign_project(pytester, test_readme_example=example)
    result = pytester.runpytest_subprocess(*ONLY_APIKEYS)
    result.assert_outcomes(passed=1)


def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) <= 190


# The walk-throughs: each `curl` is followed by a comment line that starts with the status it answers.
WALKTHROUGHS = [README, ROOT / "docs" / "api.md"]
ANSWER_FIELDS = {"KEY_ID": "id", "FULL_KEY": "fullKey"}


def walkthrough(path: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """Return the script lines of ``path``'s curl block and, for each curl, (documented status, its comment)."""
    (block,) = [block for block in fenced_blocks(path) if "curl" in block and re.search(r"^# \d{3}", block, re.M)]
    script, expected = [], []
    for line in logical_lines(block):
        documented = re.match(r"# (\d{3})\b(.*)", line)
        if documented:
            assert expected and expected[-1] is None, f"{path.name}: an answer without its curl: {line}"
            expected[-1] = (int(documented.group(1)), documented.group(2))
        elif line.startswith("#"):
            continue
        else:
            assignment = re.match(r"(\w+)=\S+", line)
            if assignment and assignment.group(1) in ANSWER_FIELDS:
                # KEY_ID=key_... stands for "copy it from the answer above": take it from there.
                field = ANSWER_FIELDS[assignment.group(1)]
                line = (
                    f'{assignment.group(1)}=$("$PYTHON" -c \'import json, sys; print(json.load(open(sys.argv[1]))'
                    f'["data"]["{field}"])\' "$WORK/body")'
                )
            if "curl " in line:
                expected.append(None)
            script.append(line)
    assert None not in expected, f"{path.name}: every curl is followed by the status it answers"
    return script, expected


@pytest.fixture
def dev_server(tmp_path):
    """`.venv/bin/apikeys serve --dev`, as `make run` starts it, on a free port and a temporary instance folder."""
    port = free_port()
    env = inherited_env() | {"APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"), "HOME": str(tmp_path)}
    stdout = (tmp_path / "stdout").open("w")
    stderr = (tmp_path / "stderr").open("w")
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "apikeys"), "serve", "--dev", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=stdout,
        stderr=stderr,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", process=process)
        yield f"http://127.0.0.1:{port}", env, tmp_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            stdout.close()
            stderr.close()


@pytest.mark.slow
def test_the_curl_walkthroughs_answer_as_documented(dev_server):
    url, env, folder = dev_server
    # What `make run` prints (checked as booleans: the printed token must not reach a test report).
    printed = (folder / "stdout").read_text()
    shown = {what: what in printed for what in ("API docs:", "Console", "Data:", "Token for tenant 'dev'", "curl -X")}
    assert all(shown.values()), shown

    for path in WALKTHROUGHS:
        script, expected = walkthrough(path)
        work = folder / path.stem
        work.mkdir()
        prelude = [
            "set -eu",
            f"WORK={shlex.quote(str(work))}",
            f"PYTHON={shlex.quote(sys.executable)}",
            # Each curl as written, its answer kept in a file and its status appended to another.
            "n=0",
            'curl() { n=$((n+1)); command curl -sS -o "$WORK/body.$n" -w "%{http_code}\\n" "$@" >> "$WORK/statuses";'
            ' cp "$WORK/body.$n" "$WORK/body"; }',
        ]
        lines = [line.replace(DOCUMENTED_PORT, url) for line in script]
        result = subprocess.run(
            ["bash", "-c", "\n".join(prelude + lines)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{path.name}: the walk-through stopped (exit {result.returncode})"
        statuses = [int(status) for status in (work / "statuses").read_text().split()]
        assert statuses == [status for status, _ in expected], path.name
        for number, (_, comment) in enumerate(expected, start=1):
            answer = (work / f"body.{number}").read_text()
            # The codes and identity headers a comment promises are in that answer.
            for code in re.findall(r"\b[A-Z]+(?:_[A-Z]+)+\b", comment):
                assert f'"code":"{code}"' in answer, f"{path.name}, curl {number}: no {code}"
            for header, value in re.findall(r"\b(X-[A-Za-z-]+): ([^\s,]+)", comment):
                assert re.search(rf"^{header}: {re.escape(value)}\r?$", answer, re.M), f"{path.name}, curl {number}"

    # Where the data lives, as the README says: a private folder with private files.
    instance = Path(env["APIKEYS_INSTANCE_PATH"])
    assert oct(instance.stat().st_mode & 0o777) == oct(0o700)
    for name in ("apikeys.sqlite3", "jwt-secret", "verifier-key"):
        assert oct((instance / name).stat().st_mode & 0o777) == oct(0o600), name
    assert os.path.isfile(instance / "apikeys.sqlite3-wal")


def walkthrough_tenant() -> str:
    """The tenant the README's walk-through makes its keys for: its `apikeys token --tenant T`, which /verify echoes."""
    script, expected = walkthrough(README)
    (tenant,) = {match for line in script for match in re.findall(r"apikeys token --tenant ([^\s)]+)", line)}
    echoed = {value for _, comment in expected for value in re.findall(r"\bX-Tenant-Id: ([^\s,]+)", comment)}
    assert echoed == {tenant}
    return tenant


@pytest.mark.slow
def test_the_console_link_make_run_prints_signs_in_as_the_walkthroughs_tenant(dev_server):
    """After the walk-through, the console `make run` links to lists its key: one tenant for both."""
    url, env, folder = dev_server
    printed = (folder / "stdout").read_text()
    # Compared as tenants only: the printed token must not reach a test report.
    (token,) = re.findall(r"Console, signed in as '[^']*': +\S+/console#token=(\S+)", printed)
    claims = jwt.decode(token, options={"verify_signature": False})
    linked = claims[DEFAULTS["APIKEYS_JWT_TENANT_CLAIM"]]
    labels = set(re.findall(r"Token for tenant '([^']*)'|signed in as '([^']*)'", printed))
    suggested = set(re.findall(r"Get a token: +\.venv/bin/apikeys token --tenant (\S+)", printed))
    tenant = walkthrough_tenant()
    assert linked == tenant
    assert {name for pair in labels for name in pair if name} == {tenant}
    assert suggested == {tenant}
