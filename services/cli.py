"""The `ekiben` command: run the stack, serve one service, migrate, operate."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from services.catalog import SERVICES

T = TypeVar("T")

# No locals in tracebacks: they would print settings, tokens and DSNs to the terminal.
app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_show_locals=False
)
dev_app = typer.Typer(no_args_is_help=True, help="Tools for developing Ekiben itself.")
events_app = typer.Typer(no_args_is_help=True, help="Lifecycle events on NATS JetStream.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens of the gateway.")
user_app = typer.Typer(no_args_is_help=True, help="Users of the gateway.")
app.add_typer(dev_app, name="dev")
app.add_typer(events_app, name="events")
app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "ekiben"

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="EKIBEN_DATA_DIR", help="Where the embedded servers keep their data."
    ),
]


def _service_names() -> list[str]:
    return list(SERVICES)


@app.command()
def serve(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")],
    host: Annotated[str | None, typer.Option(help="Overrides the http.host setting.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides the http.port setting.")] = None,
) -> None:
    """Serve one service (configured by its EKIBEN_<NAME>_* environment variables)."""
    entry = SERVICES.get(name)
    if entry is None:
        raise typer.BadParameter(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    entry.serve(host=host, port=port)


@app.command()
def migrate(
    names: Annotated[
        list[str] | None, typer.Argument(help="Services to migrate (default: all that own data).")
    ] = None,
) -> None:
    """Apply the database migrations of the services (also done at each service's start)."""
    from shared.service import migrate as run_migrations  # noqa: PLC0415
    from shared.settings import BackendSettings  # noqa: PLC0415

    chosen = names or [n for n, e in SERVICES.items() if e.owns_data]
    for name in chosen:
        entry = SERVICES.get(name)
        if entry is None or not entry.owns_data:
            raise typer.BadParameter(f"{name!r} is not a service that owns data")
        settings = entry.settings_class()()
        assert isinstance(settings, BackendSettings)
        migrations_dir = importlib.import_module(f"services.{name}.app").MIGRATIONS
        applied = asyncio.run(run_migrations(settings, migrations_dir))
        typer.echo(
            f"{name}: {len(applied)} applied" + (f" ({', '.join(applied)})" if applied else "")
        )


@app.command()
def up(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    gateway_port: Annotated[int, typer.Option(help="0 picks a free port.")] = 8000,
    dashboard_port: Annotated[int, typer.Option(help="0 picks a free port.")] = 8080,
    nats_url: Annotated[
        str | None, typer.Option(envvar="EKIBEN_NATS_URL", help="Use this NATS server.")
    ] = None,
    postgres_dsn: Annotated[
        str | None,
        typer.Option(envvar="EKIBEN_POSTGRES_DSN", help="Use this PostgreSQL database."),
    ] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(envvar="EKIBEN_S3_ENDPOINT", help="Use this S3 server.")
    ] = None,
    s3_access_key: Annotated[str | None, typer.Option(envvar="EKIBEN_S3_ACCESS_KEY")] = None,
    s3_secret_key: Annotated[str | None, typer.Option(envvar="EKIBEN_S3_SECRET_KEY")] = None,
    s3_bucket: Annotated[str, typer.Option(envvar="EKIBEN_S3_BUCKET")] = "ekiben",
    registry_url: Annotated[
        str | None,
        typer.Option(
            envvar="EKIBEN_REGISTRY_URL",
            help="Use this OCI registry (HOST:PORT or http(s)://HOST:PORT) for built images.",
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            envvar="EKIBEN_KUBECONFIG",
            help="Use this cluster (its kubeconfig; the CRDs of deploy/crds installed) instead"
            " of the embedded control plane.",
        ),
    ] = None,
    kubernetes: Annotated[
        bool,
        typer.Option(
            envvar="EKIBEN_KUBERNETES",
            help="Start the embedded control plane when no --kubeconfig is given.",
        ),
    ] = True,
) -> None:
    """Run the whole stack on this machine: NATS, PostgreSQL, S3, an OCI registry, a
    Kubernetes control plane and the five services."""
    from services.stack import External, Stack  # noqa: PLC0415

    external = External(
        nats_url=nats_url,
        postgres_dsn=postgres_dsn,
        s3_endpoint=s3_endpoint,
        s3_access_key=s3_access_key,
        s3_secret_key=s3_secret_key,
        s3_bucket=s3_bucket,
        registry_url=registry_url,
        kubeconfig=kubeconfig.expanduser().resolve() if kubeconfig else None,
        kubernetes=kubernetes,
    )
    stack = Stack(
        data_dir.expanduser().resolve(),
        external=external,
        gateway_port=gateway_port,
        dashboard_port=dashboard_port,
    )
    raise typer.Exit(stack.run())


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="The token's name, unique per user.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Expire after this many days (default: never).")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope (repeatable; default: api, i.e. full access)."),
    ] = None,
) -> None:
    """Print a new admin API token on stdout (and nothing else).

    The database is the one of the `ekiben up` running on --data-dir when there is one,
    else the gateway's own setting (EKIBEN_GATEWAY_POSTGRES__DSN).
    """
    from services.gateway.identity.admin import create_admin_token  # noqa: PLC0415

    settings = _gateway_settings(data_dir)
    secret = _on_database(
        create_admin_token(settings, name=name, scopes=scope, expires_in_days=expires_in_days)
    )
    typer.echo(secret)


@user_app.command("set-password")
def user_set_password(
    name: Annotated[str, typer.Argument(help="The user (e.g. admin).")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Set a user's password for signing in to the dashboard (their sessions end).

    The database is found as for `ekiben token create`.
    """
    import sys  # noqa: PLC0415

    from services.gateway.identity.admin import set_user_password  # noqa: PLC0415

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    settings = _gateway_settings(data_dir)
    _on_database(set_user_password(settings, name=name, password=password))
    typer.echo(f"password set for {name}", err=True)


def _gateway_settings(data_dir: Path) -> Any:
    """The gateway's settings, on the database of the `ekiben up` on `data_dir` if any."""
    from pydantic import SecretStr  # noqa: PLC0415

    from services.gateway.settings import GatewaySettings  # noqa: PLC0415
    from shared.logging import configure_logging  # noqa: PLC0415

    # Logs go to stderr, and only warnings: stdout is the answer alone, for scripts.
    configure_logging("cli", level="WARNING", json=False)
    settings = GatewaySettings()
    state_file = data_dir.expanduser() / "stack.json"
    if state_file.is_file():
        try:
            dsn = str(json.loads(state_file.read_text())["postgres_dsn"])
        except (OSError, ValueError, KeyError) as exc:
            _fail(f"cannot read the database address from {state_file}: {exc!r}")
        postgres = settings.postgres.model_copy(update={"dsn": SecretStr(dsn)})
        settings = settings.model_copy(update={"postgres": postgres})
    return settings


def _on_database(work: Coroutine[Any, Any, T]) -> T:
    """Run an operator command on the gateway database, its failures said plainly."""
    import asyncpg  # noqa: PLC0415

    from shared.db.migrations import MigrationError  # noqa: PLC0415
    from shared.errors import EkibenError  # noqa: PLC0415

    try:
        return asyncio.run(work)
    except EkibenError as exc:
        _fail(exc.message)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, MigrationError) as exc:
        _fail(f"cannot use the gateway database: {type(exc).__name__}: {exc}")


def _fail(message: str) -> NoReturn:
    typer.echo(f"ekiben: {message}", err=True)
    raise typer.Exit(1)


@dev_app.command("k8s")
def dev_k8s(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Start a real Kubernetes control plane (built by tests/k8s/build.sh) until Ctrl-C."""
    from shared.devstack.kube import run_dev_k8s  # noqa: PLC0415

    run_dev_k8s(data_dir.expanduser().resolve() / "k8s")


@events_app.command("tail")
def events_tail(
    nats_url: Annotated[str, typer.Option(envvar="EKIBEN_NATS_URL")] = "nats://127.0.0.1:4222",
    endpoint: Annotated[
        str | None,
        typer.Option(
            envvar="EKIBEN_ENDPOINT",
            help="Follow the gateway's event stream at this URL instead of NATS.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="EKIBEN_API_TOKEN", help="API token for --endpoint."),
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="Only these types, e.g. bento.pushed; with --endpoint also a comma-separated"
            " list and prefixes such as deployment.*",
        ),
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(help="With --endpoint: only events about this resource (trailing * ok)."),
    ] = None,
    replay: Annotated[
        str | None,
        typer.Option(help="Start this far back (15m, 1h, 2d); on NATS also 'all'."),
    ] = None,
) -> None:
    """Print lifecycle events as JSON lines as they happen."""
    from services.tail import TailError, tail, tail_http  # noqa: PLC0415

    try:
        if endpoint:
            if not token:
                _fail("--endpoint needs --token (or EKIBEN_API_TOKEN)")
            if replay == "all":
                _fail("--replay all is for NATS; give a duration with --endpoint")
            asyncio.run(
                tail_http(endpoint, token, types=event_type, subject=subject, replay=replay)
            )
        else:
            if subject:
                _fail("--subject needs --endpoint")
            asyncio.run(tail(nats_url, event_type=event_type, replay=replay))
    except TailError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@events_app.command("asyncapi")
def events_asyncapi() -> None:
    """Print the AsyncAPI document of the event contract."""
    from shared.events.asyncapi import asyncapi_document  # noqa: PLC0415

    typer.echo(json.dumps(asyncapi_document(), indent=2, sort_keys=True))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
