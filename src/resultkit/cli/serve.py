"""``resultkit serve``: the results browser, JSON API and metrics, run by uvicorn."""

from __future__ import annotations

import click

from .common import app_from_context, handle_errors, target_options

__all__ = ["serve_command"]


@click.command("serve")
@target_options
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="The port."
)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Allow export, erase and retry from the web (off: they answer 403).",
)
@click.option(
    "--cache-seconds",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Reuse a whole-store scan (health page, /metrics) for this long.",
)
@click.option(
    "--audit-log",
    default="resultkit-audit.log",
    show_default=True,
    metavar="PATH",
    help="Append one line per write (export, erase) to this file.",
)
@handle_errors
def serve_command(
    url: str | None,
    app: str | None,
    host: str,
    port: int,
    allow_writes: bool,
    cache_seconds: float,
    audit_log: str,
) -> None:
    """Serve a results browser, a JSON API (/openapi.json) and Prometheus metrics
    (/metrics) over the store.

    Listens on 127.0.0.1 unless --host says otherwise; any other address needs
    RESULTKIT_SERVE_TOKEN (a bearer token) or RESULTKIT_SERVE_USER and
    RESULTKIT_SERVE_PASSWORD (basic auth) in the environment.
    """
    from ..errors import UsageError
    from ..web import ServeAuth, create_app, require_safe_bind

    if url and app:
        raise UsageError("give either a backend URL or -A/--app, not both")

    auth = ServeAuth.from_env()
    require_safe_bind(host, auth)
    target = app_from_context(app)
    web = create_app(
        url if url else target,
        allow_writes=allow_writes,
        auth=auth,
        cache_seconds=cache_seconds,
        audit_log=audit_log,
    )
    import uvicorn

    click.echo(f"resultkit serve: http://{host}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(web, host=host, port=port, log_level="warning")
