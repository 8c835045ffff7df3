"""The command examples/README.md gives for running the nginx example as shipped, run as written: it proxies."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.forward_auth.support import EXAMPLES
from tests.forward_auth.support import NGINX_WRAPPER
from tests.forward_auth.support import Proxy
from tests.forward_auth.support import assert_identity
from tests.forward_auth.support import assert_refused
from tests.forward_auth.test_nginx import nginx_site
from tests.servers import ROOT
from tests.servers import free_port
from tests.servers import wait_for

pytestmark = pytest.mark.slow

README = EXAMPLES / "README.md"


def documented_commands() -> list[str]:
    """The commands (comments dropped) of the sh block under examples/README.md's "Trying the nginx example"."""
    text = README.read_text()
    section = text.split("## Trying the nginx example\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_documented_commands_use_the_placeholder_ports():
    # The stand-in application and curl must reach what apikeys.conf's placeholders name, as shipped.
    site = (EXAMPLES / "nginx" / "apikeys.conf").read_text()
    commands = documented_commands()
    assert "server 127.0.0.1:8000;" in site
    assert "make run" in commands and "\nPORT ?= 8000\n" in (ROOT / "Makefile").read_text()
    assert "server 127.0.0.1:3000;" in site
    assert any(c.startswith("python3 -m http.server 3000 --bind 127.0.0.1") for c in commands)
    assert "listen 8080;" in site
    assert any("http://127.0.0.1:8080/" in c for c in commands)


@pytest.fixture
def documented_nginx(nginx_program, verify_recorder, application, tmp_path):
    """The README's nginx line run by a shell in a copy of the repository: the wrapper as shipped, free ports."""
    (line,) = [c for c in documented_commands() if " nginx " in f" {c} "]
    assert line == 'mkdir -p run && nginx -p "$PWD/run" -c "$PWD/examples/nginx/nginx.conf" -e stderr'
    folder = tmp_path / "examples" / "nginx"
    folder.mkdir(parents=True)
    shutil.copy(NGINX_WRAPPER, folder / "nginx.conf")
    port = free_port()
    site = nginx_site(urllib.parse.urlsplit(verify_recorder.url).port, application.server_address[1], port)
    (folder / "apikeys.conf").write_text(site)
    # The shell finds nginx where the fixture did (/usr/sbin is not on every PATH).
    env = {**os.environ, "PATH": f"{Path(nginx_program).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = tmp_path / "nginx.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            ["bash", "-c", line], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for(url + "/", timeout=15, process=process)
        except (RuntimeError, TimeoutError) as error:
            pytest.fail(f"the documented nginx command did not start: {error}\n{log.read_text(errors='replace')}")
        yield Proxy(url, application), tmp_path / "run"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_the_documented_nginx_command_proxies_a_verified_request(documented_nginx, service):
    proxy, run = documented_nginx
    key = service.create_key("acme")

    answer, seen = proxy.request("GET", "/orders/42?x=1", {"X-Api-Key": key.full_key})
    refused, unseen = proxy.request("GET", "/orders/42?x=1")

    assert answer.status == 200
    assert len(seen) == 1
    assert_identity(seen[0], key)
    assert_refused(refused, unseen, 401)
    # What nginx wrote went under the prefix the command gave it.
    assert (run / "nginx.pid").is_file()
    assert (run / "proxy_temp").is_dir()
    assert "GET /orders/42?x=1" in (run / "access.log").read_text()
