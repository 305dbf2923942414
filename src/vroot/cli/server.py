"""`vroot server`: create a server directory, run the server, ask it how it is, enroll a host."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

app = typer.Typer(help="Run the RA server and PCA (HTTPS, mutual TLS for agents).", no_args_is_help=True)


@app.command()
def init(
    directory: Path = typer.Argument(..., metavar="DIR", help="The server directory to create."),
    db: str | None = typer.Option(None, "--db", help="Database URL (default sqlite:///DIR/vroot.db)."),
    manufacturer_ca: list[Path] = typer.Option(
        [], "--manufacturer-ca", help="PEM file (or vroot CA directory) of a TM manufacturer CA (repeatable)."
    ),
    listen: str = typer.Option("127.0.0.1:8443", "--listen", help="HOST:PORT to serve on."),
) -> None:
    """Create keys (PCA, operations CA, result signing), a TLS certificate, server.toml, the database,
    and an operator token, printed once (only its SHA-256 is stored)."""
    from datetime import UTC, datetime

    from vroot.server import init_server

    result = init_server(
        directory, now=datetime.now(UTC), rng=os.urandom, database=db, manufacturer_cas=manufacturer_ca, listen=listen
    )
    s = result.settings
    typer.echo(f"server directory {s.directory} (listen {s.listen}, database {s.database_url.split('://')[0]})")
    typer.echo(f"agents and operators trust {s.directory / 'tls' / 'ca.pem'}")
    if not s.manufacturer_cas:
        typer.echo("warning: no --manufacturer-ca given: no host can enroll until server.toml names one", err=True)
    typer.echo(f"operator token (shown once, keep it): {result.operator_token}")


@app.command()
def run(
    directory: Path = typer.Argument(..., metavar="DIR", help="The server directory."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve HTTPS on the configured address until SIGINT/SIGTERM (then exit 0 after a graceful stop)."""
    import signal

    from vroot.server import Services, load_settings, serve

    settings = load_settings(directory, environ=os.environ)
    services = Services.open(settings)
    # uvicorn handles SIGINT/SIGTERM while it serves and raises the signal again once it has stopped;
    # by then the stop was graceful, so let that re-raise end the command normally.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        serve(settings, services, log_level=log_level)
    finally:
        services.close()


@app.command()
def status(
    target: str = typer.Argument(..., metavar="DIR|URL", help="A server directory or https:// URL."),
    token: str | None = typer.Option(None, "--token", help="Operator token (default: $VROOT_TOKEN)."),
    ca: Path | None = typer.Option(None, "--ca", help="Operations CA (default: DIR/tls/ca.pem)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Health and counts of a running server."""
    from vroot.agent import ServerClient
    from vroot.errors import InvalidInput
    from vroot.server import load_settings

    token = token or os.environ.get("VROOT_TOKEN")
    if not token:
        raise InvalidInput("give the operator token with --token or $VROOT_TOKEN")
    if target.startswith("https://"):
        url = target
        if ca is None:
            raise InvalidInput("give --ca (the server's operations CA) with a URL")
    else:
        settings = load_settings(target, environ=os.environ)
        host = "127.0.0.1" if settings.listen_host in ("0.0.0.0", "") else settings.listen_host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        url = f"https://{host}:{settings.listen_port}"
        ca = ca or settings.directory / "tls" / "ca.pem"
    with ServerClient(url, ca_certificate=ca, token=token) as client:
        health = client.get("/v1/health")
        doc = {"url": url, **health, **client.get("/v1/status")}
    if as_json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    typer.echo(f"{url}: {doc['status']} (vroot {doc['version']}, {doc['database']}, "
               f"schema {'current' if doc['schema_current'] else 'OUT OF DATE'})")  # fmt: skip
    for kind, states in sorted(doc["agents"].items()):
        typer.echo(f"  {kind} agents: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))
    if not doc["agents"]:
        typer.echo("  no agents")
    if doc["verdicts"]:
        typer.echo("  latest verdicts: " + ", ".join(f"{n} {v}" for v, n in sorted(doc["verdicts"].items())))


@app.command("enroll-host", hidden=True)
def enroll_host(
    host_dir: Path = typer.Argument(..., metavar="HOST_DIR", help="The host directory (vroot host init)."),
    server: str = typer.Option(..., "--server", help="The server's https:// URL."),
    ca: Path = typer.Option(..., "--ca", help="The server's operations CA (DIR/tls/ca.pem)."),
) -> None:
    """Kept for older scripts: the same as `vroot host enroll`."""
    from vroot.cli.host import enroll

    enroll(host_dir, server, ca)
