"""``apikeys serve``: gunicorn with apikeys' settings, honouring HOST, PORT and WEB_CONCURRENCY."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys

import click


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` is only reachable from this machine."""
    if host == "localhost" or host.startswith("unix:"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_address(host: str, port: int) -> str:
    """Return gunicorn's --bind for ``host`` and ``port``: ``[::1]:8000`` for IPv6, a unix socket's path as is."""
    if host.startswith("unix:"):
        return host  # a socket file has no port
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass  # a name, or an address already in brackets
    return f"{host}:{port}"


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, an address gunicorn could not bind: else it retries for seconds with a dozen log lines."""
    if host.startswith("unix:"):
        return
    address = host.strip("[]")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a name: gunicorn binds it as IPv4 too
    # Bound as gunicorn binds (SO_REUSEADDR, so a port in TIME_WAIT is free), then let go at once. Another process
    # may still take the port before gunicorn does: then gunicorn's own retries and errors are what remain.
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                other = port + 1 if port < 65535 else port - 1
                reason = f"port {port} on {host} is in use (another apikeys? `PORT={other} make run`)"
            else:  # a name that does not resolve, an address not on this host, a port below 1024
                reason = f"cannot listen on {host} port {port}: {error.strerror or error}"
            click.echo(f"apikeys cannot start: {reason}", err=True)
            raise click.exceptions.Exit(1) from None


def _check_settings() -> None:
    # Refuse bad settings here, in one line, before gunicorn prints anything (its on_starting hook checks them too).
    from flask import Config

    from apikeys import config

    try:
        config.load(Config(config.instance_path()))
    except config.ConfigError as error:
        raise click.ClickException(str(error)) from None


@click.command("serve", short_help="Serve the API with gunicorn.")
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True, help="Address to bind (env: HOST).")
@click.option(
    "--port", envvar="PORT", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port (env: PORT)."
)
@click.option(
    "--workers",
    envvar="WEB_CONCURRENCY",
    type=click.IntRange(min=1),
    help="gunicorn workers (env: WEB_CONCURRENCY; default: 2 x cores + 1).",
)
@click.option("--dev", is_flag=True, help="Local stand-in: print a token for tenant 'dev', a console link and a curl.")
@click.option("--seed", type=click.Path(exists=True, dir_okay=False), help="Import keys from this JSON file at start.")
def serve_command(host, port, workers, dev, seed):
    """Serve the API with gunicorn; the database is created or upgraded first."""
    _check_settings()
    check_port(host, port)
    if not is_loopback(host):
        click.echo(
            f"Warning: serving on {host} directly. gunicorn's workers can be held by slow clients: put a buffering "
            "proxy such as nginx in front (docs/deployment.md).",
            err=True,
        )
    environ = dict(os.environ, HOST=host, PORT=str(port))
    if workers:
        environ["WEB_CONCURRENCY"] = str(workers)
    if dev:
        environ["APIKEYS_DEV"] = "1"
    if seed:
        environ["APIKEYS_SEED"] = os.path.abspath(seed)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:apikeys.server.gunicorn_conf",
        "--bind",
        bind_address(host, port),
    ]
    argv.append("apikeys:create_app()")
    os.execve(sys.executable, argv, environ)  # noqa: S606 (replaces this process; no shell)
