"""docker-compose.yml, the Dockerfile and .dockerignore, checked against the code.

No Docker engine runs here, so what would only show when the stack starts is checked by
reading the files: every container of the Ekiben image runs a command the `ekiben` CLI has;
every EKIBEN_* variable is a field of its service's settings class and the values parse;
ports, health checks and the host names in URLs line up with the compose services; the
dependencies exist and wait for the right thing; the image runs the console script that
pyproject.toml declares. Expectations come from the code (services.catalog, the settings
classes, the typer app), so a change on either side that breaks the stack fails here.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import SplitResult, urlsplit

import pytest
import typer.main
import yaml
from pydantic import BaseModel, SecretStr, ValidationError

import services.cli
from services.catalog import SERVICES, ServiceEntry
from shared.settings import (
    BackendSettings,
    NatsSettings,
    PostgresSettings,
    S3Settings,
    ServiceSettings,
)

ROOT = Path(__file__).parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The fields of a section a service must get from compose: the defaults point at loopback
# or are local-development credentials. Keyed by the section's type, so a section added to
# a settings class is picked up wherever it appears.
REQUIRED_IN_SECTION: dict[type[BaseModel], set[str]] = {
    NatsSettings: {"url"},
    PostgresSettings: {"dsn"},
    S3Settings: {"endpoint_url", "access_key_id", "secret_access_key", "bucket"},
}
# Settings that may still name a loopback address inside a container, and why.
LOOPBACK_ALLOWED: dict[tuple[str, tuple[str, ...]], str] = {
    ("builder", ("registry", "url")): "the compose stack has no image registry (nor cluster)",
    # A link for a person's browser on the host, where compose publishes the dashboard.
    ("gateway", ("sessions", "dashboard_url")): "the setup URL is opened on the host",
    ("dashboard", ("public_gateway_url",)): "the login line is run on the host",
}
LOOPBACK = re.compile(r"(?<![\w.])(127(?:\.\d{1,3}){3}|localhost|\[::1\])(?![\w.])")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# --- reading the files ---------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return services


def argv_of(value: Any) -> list[str]:
    """A compose `command`/`entrypoint`/`test` as a list (the string form is split)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list), f"not a command: {value!r}"
    return [str(v) for v in value]


def environment_of(name: str, spec: Mapping[str, Any]) -> dict[str, str]:
    """The environment compose gives a service, exactly as the container sees it."""
    assert "env_file" not in spec, f"{name}: env_file hides the environment from this test"
    raw = spec.get("environment") or {}
    pairs: list[tuple[str, Any]]
    if isinstance(raw, list):
        pairs = [tuple(item.split("=", 1)) if "=" in item else (item, None) for item in raw]
    else:
        pairs = list(raw.items())
    env: dict[str, str] = {}
    for key, value in pairs:
        assert value is not None, f"{name}: {key} has no value (taken from the host's shell)"
        assert not isinstance(value, bool), f"{name}: {key}: quote booleans ('true')"
        assert isinstance(value, str | int | float), f"{name}: {key}: {value!r} is not a scalar"
        text = str(value)
        assert "$" not in text, f"{name}: {key}: compose would interpolate {text!r}"
        env[key] = text
    return env


def ports_of(name: str, spec: Mapping[str, Any]) -> list[tuple[int | None, int]]:
    """(host port or None, container port) for each entry of `ports`."""
    found: list[tuple[int | None, int]] = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            found.append((int(published) if published else None, int(entry["target"])))
            continue
        parts = str(entry).split("/", 1)[0].split(":")
        assert 1 <= len(parts) <= 3, f"{name}: cannot read port {entry!r}"
        host = parts[-2] if len(parts) >= 2 else None
        found.append((int(host) if host else None, int(parts[-1])))
    return found


def healthcheck_urls(spec: Mapping[str, Any]) -> list[SplitResult]:
    check = spec.get("healthcheck") or {}
    text = " ".join(argv_of(check.get("test")))
    return [urlsplit(url) for url in re.findall(r"https?://[^\s'\"]+", text)]


def has_healthcheck(spec: Mapping[str, Any]) -> bool:
    check = spec.get("healthcheck") or {}
    test = argv_of(check.get("test"))
    return bool(test) and test[0] != "NONE" and not check.get("disable", False)


def depends_on(spec: Mapping[str, Any]) -> dict[str, str]:
    """Dependency name -> condition (the list form means service_started)."""
    raw = spec.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {dep: (cfg or {}).get("condition", "service_started") for dep, cfg in raw.items()}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, one list per stage
    (the ARGs before the first FROM form stage 0)."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[list[Instruction]] = [[]]
    for line in lines:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.keyword} is not in exec form"
    return [str(v) for v in value]


def last(stage: list[Instruction], keyword: str) -> Instruction | None:
    found = [i for i in stage if i.keyword == keyword]
    return found[-1] if found else None


def image_entrypoint() -> list[str]:
    instruction = last(dockerfile_stages()[-1], "ENTRYPOINT")
    assert instruction is not None, "the Dockerfile's final stage has no ENTRYPOINT"
    return exec_form(instruction)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- the CLI -------------------------------------------------------------------------


def cli_commands(group: Any = None) -> Mapping[str, Any]:
    group = group if group is not None else typer.main.get_command(services.cli.app)
    commands: Mapping[str, Any] = getattr(group, "commands", {})
    return commands


def parse_cli(argv: list[str], where: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The command path and parsed parameters of `ekiben <argv>`, without running it."""
    path: list[str] = []
    commands = cli_commands()
    rest = list(argv)
    while True:
        assert rest, f"{where}: `ekiben {shlex.join(argv)}` names no command"
        name = rest.pop(0)
        command = commands.get(name)
        assert command is not None, (
            f"{where}: `ekiben {' '.join([*path, name])}` is not a command "
            f"(the CLI has {sorted(commands)})"
        )
        path.append(name)
        if not getattr(command, "commands", None):
            break
        commands = cli_commands(command)
    try:
        ctx = command.make_context(" ".join(path), rest)
    except Exception as exc:
        pytest.fail(f"{where}: `ekiben {shlex.join(argv)}` does not parse: {exc}")
    return tuple(path), dict(ctx.params)


def entries_configured(path: tuple[str, ...], params: dict[str, Any], where: str) -> list[str]:
    """The catalog services whose settings `ekiben <path>` reads (see services/cli.py)."""
    if path == ("serve",):
        assert params["name"] in SERVICES, f"{where}: no service {params['name']!r}"
        for option in ("host", "port"):
            assert params[option] is None, (
                f"{where}: give the address as EKIBEN_*_HTTP__HOST/PORT, not --{option}"
            )
        return [params["name"]]
    if path == ("migrate",):
        names = list(params["names"] or [n for n, e in SERVICES.items() if e.owns_data])
        for name in names:
            assert name in SERVICES, f"{where}: no service {name!r}"
            assert SERVICES[name].owns_data, f"{where}: {name} has no database to migrate"
        return names
    pytest.fail(f"{where}: `ekiben {' '.join(path)}` is not a command for a container")


# --- settings ------------------------------------------------------------------------


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (through `X | None`), or None for a plain value."""
    candidates = [annotation, *get_args(annotation)] if get_origin(annotation) else [annotation]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def resolve_env_key(model: type[BaseModel], parts: list[str]) -> str | None:
    """None if `a__b__c` names a field of `model`; else what is wrong."""
    head, *rest = parts
    info = model.model_fields.get(head)
    if info is None:
        return f"{model.__name__} has no field {head!r} (it has {sorted(model.model_fields)})"
    if not rest:
        return None
    sub = section_model(info.annotation)
    if sub is None:
        return f"{model.__name__}.{head} is a value, not a section"
    return resolve_env_key(sub, rest)


def as_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def leaves(model: BaseModel, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from leaves(value, (*path, name))
        else:
            yield (*path, name), value


def urls_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from urls_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from urls_in(item)
    elif value is not None and "://" in as_text(value):
        yield as_text(value)


def clean_settings(entry: ServiceEntry, monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """The settings class's defaults, whatever this process's environment holds."""
    return settings_with(entry, {}, monkeypatch)


def settings_with(
    entry: ServiceEntry, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> ServiceSettings:
    with monkeypatch.context() as patch:
        for key in list(os.environ):
            if key.upper().startswith("EKIBEN_"):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        cls = entry.settings_class()
        try:
            return cls()
        except ValidationError as exc:
            pytest.fail(f"{entry.env_prefix}* do not parse as {cls.__name__}: {exc}")


# --- the stack as compose would run it -------------------------------------------------


@dataclass
class Container:
    """A compose service running the Ekiben image."""

    name: str
    spec: dict[str, Any]
    argv: list[str]
    command: tuple[str, ...]
    env: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)  # catalog name -> settings

    @property
    def serves(self) -> str | None:
        return next(iter(self.settings)) if self.command == ("serve",) else None

    @property
    def http_port(self) -> int:
        assert self.serves is not None
        port: int = self.settings[self.serves].http.port
        return port


def ekiben_containers(monkeypatch: pytest.MonkeyPatch) -> dict[str, Container]:
    """Every compose service built from this repository (or running the image it builds),
    with its command parsed by the CLI and its settings built from its environment."""
    services = compose_services()
    built_images = {spec.get("image") for spec in services.values() if "build" in spec} - {None}
    containers: dict[str, Container] = {}
    for name, spec in services.items():
        if "build" not in spec and spec.get("image") not in built_images:
            continue
        entrypoint = argv_of(spec.get("entrypoint")) or image_entrypoint()
        assert entrypoint == image_entrypoint(), f"{name}: entrypoint {entrypoint} is not ekiben"
        argv = argv_of(spec.get("command")) or exec_form(
            last(dockerfile_stages()[-1], "CMD") or Instruction("CMD", "[]")
        )
        path, params = parse_cli(argv, name)
        env = environment_of(name, spec)
        container = Container(name, spec, argv, path, env)
        for service in entries_configured(path, params, name):
            container.settings[service] = settings_with(SERVICES[service], env, monkeypatch)
        containers[name] = container
    assert containers, "no compose service runs the image built from this repository"
    return containers


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> dict[str, Container]:
    return ekiben_containers(monkeypatch)


def serving(containers: Mapping[str, Container]) -> dict[str, Container]:
    """Catalog name -> the container serving it."""
    return {c.serves: c for c in containers.values() if c.serves is not None}


def target_port_ok(target: str, port: int, containers: Mapping[str, Container]) -> bool:
    """Whether compose service `target` listens on `port`."""
    if target in containers and containers[target].serves is not None:
        return port == containers[target].http_port
    spec = compose_services()[target]
    exposed = {int(str(p).split("/", 1)[0]) for p in spec.get("expose") or []}
    return port in exposed | {container for _, container in ports_of(target, spec)}


# --- tests: commands and the image -----------------------------------------------------


def test_every_container_of_the_image_runs_an_ekiben_command(
    containers: dict[str, Container],
) -> None:
    served = [c.serves for c in containers.values() if c.serves is not None]
    assert sorted(served) == sorted(SERVICES), "each service is served by exactly one container"
    migrated = {n for c in containers.values() if c.command == ("migrate",) for n in c.settings}
    assert migrated == {n for n, e in SERVICES.items() if e.owns_data}, "a migrate container"
    for container in containers.values():
        build = container.spec.get("build")
        if build is None:
            continue
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (COMPOSE_FILE.parent / context).resolve() == ROOT, f"{container.name}: context"
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE, f"{container.name}: file"


def test_the_image_runs_the_console_script_and_its_default_command_parses() -> None:
    scripts: dict[str, str] = pyproject()["project"]["scripts"]
    entrypoint = image_entrypoint()
    assert len(entrypoint) == 1, f"ENTRYPOINT {entrypoint}: the console script alone"
    assert entrypoint[0] in scripts, (
        f"ENTRYPOINT {entrypoint} is not a console script of pyproject.toml ({sorted(scripts)})"
    )
    module, _, attr = scripts[entrypoint[0]].partition(":")
    assert getattr(importlib.import_module(module), attr) is services.cli.main
    cmd = last(dockerfile_stages()[-1], "CMD")
    assert cmd is not None, "the image has no default command"
    path, params = parse_cli(exec_form(cmd), "Dockerfile CMD")
    entries_configured(path, params, "Dockerfile CMD")


def test_the_image_exposes_the_default_ports_runs_unprivileged_and_skips_extras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stages = dockerfile_stages()
    final = stages[-1]
    exposed = {int(p.split("/")[0]) for i in final if i.keyword == "EXPOSE" for p in i.args.split()}
    defaults = {clean_settings(e, monkeypatch).http.port for e in SERVICES.values()}
    assert exposed == defaults, "EXPOSE the services' default HTTP ports"
    user = last(final, "USER")
    assert user is not None, "the image runs as root"
    assert user.args.split(":")[0] not in {"root", "0"}, "the image runs as root"
    for instruction in (i for stage in stages for i in stage if i.keyword == "RUN"):
        for install in re.findall(r"pip install[^&;|]*", instruction.args):
            assert "[" not in install, f"no extras in the image: {install!r}"
    # The base image's Python satisfies requires-python.
    args = {
        k: v
        for i in (i for stage in stages for i in stage if i.keyword == "ARG")
        for k, _, v in [i.args.partition("=")]
    }
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), final[0].args.split()[0])
    found = re.match(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)", base)
    assert found, f"the final stage is not built on a python image: {base!r}"
    wanted = re.match(r">=\s*(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
    assert wanted
    assert tuple(map(int, found.groups())) >= tuple(map(int, wanted.groups()))


def _glob(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (`*` within a name, `**` across names)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Whether .dockerignore leaves `path` in the context (the last matching line wins; a
    line matching a parent folder matches what is inside)."""
    if not DOCKERIGNORE.exists():
        return True
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = _glob(line.lstrip("!").strip("/"))
        if any(pattern.fullmatch(p) for p in prefixes):
            included = negate
    return included


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def runtime_packages() -> frozenset[str]:
    """The repository's top-level packages that the CLI and every service import: the
    import statements followed from services/cli.py and each service's modules."""
    todo = ["services.cli", "services.catalog"]
    for entry in SERVICES.values():
        todo += [f"services.{entry.name}.app", entry.settings_path.partition(":")[0]]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        path = module_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:n]) for n in range(1, len(parts))]
        package = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                origin = ".".join([*base, *([node.module] if node.module else [])])
                todo += [origin, *(f"{origin}.{alias.name}" for alias in node.names)]
    return frozenset(module.split(".")[0] for module in seen)


def test_the_build_context_holds_what_the_image_needs_and_nothing_local() -> None:
    project = pyproject()
    packages = runtime_packages()
    wheel = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert packages <= wheel, f"the wheel leaves out {sorted(packages - wheel)}"
    needed = ["pyproject.toml", project["project"]["readme"]]
    for package in packages:
        needed += [
            str(p.relative_to(ROOT))
            for p in (ROOT / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ]
    copied: set[str] = set()
    for instruction in (i for stage in dockerfile_stages() for i in stage):
        if instruction.keyword in {"COPY", "ADD"} and "--from" not in instruction.args:
            *sources, _dest = [a for a in instruction.args.split() if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{instruction.keyword} {source}: no such path"
                copied.add(source.rstrip("/") or ".")
    missing = sorted(p for p in [*needed, *copied] if not in_build_context(p))
    assert not missing, f".dockerignore leaves out what the build needs: {missing[:10]}"
    uncopied = sorted(p for p in packages if not copied & {p, "."})
    assert not uncopied, f"the Dockerfile does not COPY {uncopied}"
    for local in (".git/HEAD", ".venv/pyvenv.cfg", "tests/unit/test_compose.py"):
        assert not in_build_context(local), f".dockerignore should leave out {local}"


# --- tests: environment ----------------------------------------------------------------


def test_every_ekiben_variable_is_a_settings_field(containers: dict[str, Container]) -> None:
    """Each variable of an Ekiben container is `<prefix><field>[__<field>...]` of a service
    whose settings its command reads: a typo would silently leave the default."""
    for container in containers.values():
        prefixes = {SERVICES[n].env_prefix: SERVICES[n] for n in container.settings}
        for key in container.env:
            prefix = next((p for p in prefixes if key.upper().startswith(p)), None)
            assert prefix is not None, (
                f"{container.name}: {key} is read by none of {sorted(container.settings)} "
                f"(prefixes {sorted(prefixes)})"
            )
            entry = prefixes[prefix]
            cls = entry.settings_class()
            assert cls.model_config.get("env_prefix") == entry.env_prefix
            problem = resolve_env_key(cls, key[len(prefix) :].lower().split("__"))
            assert problem is None, f"{container.name}: {key}: {problem}"


def test_every_container_gets_its_connections(containers: dict[str, Container]) -> None:
    for container in containers.values():
        for service in container.settings:
            prefix = SERVICES[service].env_prefix
            cls = SERVICES[service].settings_class()
            sections = {
                name: section_model(info.annotation) for name, info in cls.model_fields.items()
            }
            if container.command == ("migrate",):
                assert issubclass(cls, BackendSettings)
                sections = {n: m for n, m in sections.items() if m is PostgresSettings}
            else:
                for key in ("HTTP__HOST", "HTTP__PORT"):
                    assert f"{prefix}{key}" in container.env, f"{container.name}: {prefix}{key}"
            for section, model in sections.items():
                for required in REQUIRED_IN_SECTION.get(model, set()) if model else set():
                    key = f"{prefix}{section}__{required}".upper()
                    assert key in container.env, f"{container.name}: {key} is not set"


def test_the_environment_parses_and_names_no_loopback_address(
    containers: dict[str, Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    for service, path in LOOPBACK_ALLOWED:
        defaults = dict(leaves(clean_settings(SERVICES[service], monkeypatch)))
        stale = path not in defaults or not LOOPBACK.search(as_text(defaults[path]))
        assert not stale, f"stale LOOPBACK_ALLOWED entry: {service} {'.'.join(path)}"
    for container in containers.values():
        for service, settings in container.settings.items():
            for path, value in leaves(settings):
                if (service, path) in LOOPBACK_ALLOWED or value is None:
                    continue
                if container.command == ("migrate",) and path[0] != "postgres":
                    continue
                assert not LOOPBACK.search(as_text(value)), (
                    f"{container.name}: {service} {'.'.join(path)} = {as_text(value)!r} is "
                    "this container itself; point it at a compose service"
                )
        if container.serves is not None:
            host = container.settings[container.serves].http.host
            assert host == "0.0.0.0", f"{container.name}: listen on 0.0.0.0, not {host}"


# --- tests: ports, URLs, health checks --------------------------------------------------


def test_ports_line_up(containers: dict[str, Container]) -> None:
    # The default stack (no profile); a profile's services publish their own UIs.
    published: dict[str, list[tuple[int | None, int]]] = {
        name: ports_of(name, spec)
        for name, spec in compose_services().items()
        if spec.get("ports") and not spec.get("profiles")
    }
    # What `ekiben up` offers on the host (its --<service>-port options), compose publishes.
    up = cli_commands()["up"]
    offered = {
        p.name.removesuffix("_port"): p.default
        for p in up.params
        if p.name and p.name.endswith("_port") and p.name.removesuffix("_port") in SERVICES
    }
    by_service = serving(containers)
    assert {by_service[s].name for s in offered} == set(published), (
        f"publish exactly the services `ekiben up` does: {sorted(offered)}"
    )
    for service, default in offered.items():
        container = by_service[service]
        assert published[container.name] == [(default, container.http_port)], (
            f"{container.name}: publish {default}:{container.http_port}"
        )
    for container in by_service.values():
        for url in healthcheck_urls(container.spec):
            assert url.hostname in LOOPBACK_HOSTS, f"{container.name}: health check {url}"
            assert url.port == container.http_port, f"{container.name}: health check {url}"


def test_services_are_health_checked_on_readyz(containers: dict[str, Container]) -> None:
    for container in serving(containers).values():
        assert has_healthcheck(container.spec), f"{container.name}: no health check"
        paths = {u.path for u in healthcheck_urls(container.spec)}
        assert paths == {"/readyz"}, f"{container.name}: health check {paths}"
    for name, spec in compose_services().items():
        if name not in containers:
            assert has_healthcheck(spec), f"{name}: no health check"


def test_every_url_names_a_compose_service_on_a_port_it_listens_on(
    containers: dict[str, Container],
) -> None:
    services = compose_services()
    for container in containers.values():
        for service, settings in container.settings.items():
            for path, value in leaves(settings):
                if container.command == ("migrate",) and path[0] != "postgres":
                    continue
                for text in urls_in(value):
                    url = urlsplit(text)
                    where = f"{container.name}: {service} {'.'.join(path)} = {url.netloc}"
                    if (service, path) in LOOPBACK_ALLOWED:
                        continue
                    assert url.hostname in services, f"{where}: no compose service of that name"
                    assert url.port is not None, f"{where}: give the port"
                    assert target_port_ok(url.hostname, url.port, containers), (
                        f"{where}: {url.hostname} does not listen on {url.port}"
                    )
                    assert url.hostname in depends_on(container.spec), (
                        f"{where}: {container.name} does not depend on {url.hostname}"
                    )


def test_the_dashboard_points_at_the_services_it_names(containers: dict[str, Container]) -> None:
    by_service = serving(containers)
    dashboard = by_service["dashboard"].settings["dashboard"]
    urls: dict[str, str] = {**dashboard.service_urls, "gateway": dashboard.gateway_url}
    assert set(dashboard.service_urls) == set(by_service) - {"dashboard"}, (
        "the dashboard's SERVICE_URLS names every other service"
    )
    for service, text in urls.items():
        url = urlsplit(text)
        target = by_service[service]
        assert url.hostname == target.name, f"dashboard: {service} is at {target.name}"
        assert url.port == target.http_port, f"dashboard: {service} listens on {target.http_port}"


def test_the_servers_accept_what_the_services_are_given(containers: dict[str, Container]) -> None:
    services = compose_services()
    for container in containers.values():
        for service, settings in container.settings.items():
            if isinstance(getattr(settings, "postgres", None), PostgresSettings):
                dsn = urlsplit(settings.postgres.dsn.get_secret_value())
                assert dsn.hostname is not None
                server = environment_of(dsn.hostname, services[dsn.hostname])
                user = server.get("POSTGRES_USER", "postgres")
                assert dsn.username == user, f"{container.name}: {service} DSN user"
                assert dsn.password == server.get("POSTGRES_PASSWORD"), f"{container.name}: pw"
                assert dsn.path.lstrip("/") == server.get("POSTGRES_DB", user), "database"
            if container.command == ("migrate",):
                continue
            if isinstance(getattr(settings, "nats", None), NatsSettings):
                host = urlsplit(settings.nats.url).hostname
                assert host is not None
                command = argv_of(services[host].get("command"))
                assert {"-js", "--jetstream"} & set(command), f"{host}: JetStream is off"
            if isinstance(getattr(settings, "s3", None), S3Settings):
                host = urlsplit(settings.s3.endpoint_url or "").hostname
                assert host is not None
                server = environment_of(host, services[host])
                keys = (
                    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
                    if "AWS_ACCESS_KEY_ID" in server
                    else ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
                )
                assert server.get(keys[0]) == settings.s3.access_key_id, f"{host}: access key"
                secret = settings.s3.secret_access_key.get_secret_value()
                assert server.get(keys[1]) == secret, f"{host}: secret key"


# --- tests: dependencies and volumes -----------------------------------------------------


def test_dependencies_exist_and_wait_for_the_right_thing(
    containers: dict[str, Container],
) -> None:
    services = compose_services()
    for name, spec in services.items():
        for dep, condition in depends_on(spec).items():
            assert dep in services, f"{name} depends on {dep}: no such service"
            assert dep != name, f"{name} depends on itself"
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {dep}: {condition}"
            if condition == "service_healthy":
                assert has_healthcheck(services[dep]), f"{name} waits for {dep}'s health check"
            if condition == "service_completed_successfully":
                restart = str(services[dep].get("restart", "no"))
                assert restart == "no" or restart.startswith("on-failure"), (
                    f"{dep} runs once: restart {restart!r} would never complete"
                )
    migrations = {
        n: c.name for c in containers.values() if c.command == ("migrate",) for n in c.settings
    }
    for service, container in serving(containers).items():
        if SERVICES[service].owns_data:
            deps = depends_on(container.spec)
            assert deps.get(migrations[service]) == "service_completed_successfully", (
                f"{container.name} starts after {migrations[service]} completed"
            )


def test_dependencies_have_no_cycle() -> None:
    services = compose_services()
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, f"dependency cycle: {' -> '.join((*trail, name))}"
        if name in done:
            return
        for dep in depends_on(services[name]):
            visit(dep, (*trail, name))
        done.add(name)

    for name in services:
        visit(name, ())


def test_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    used: set[str] = set()
    for name, spec in compose_services().items():
        for volume in spec.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert declared == used, f"unused volumes: {sorted(declared - used)}"


# --- tests: the observability profile ----------------------------------------------------

PROFILES = {"observability"}
OBSERVABILITY = ROOT / "deploy" / "observability"


def bind_mounts(spec: Mapping[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts of repository files."""
    mounts: dict[str, Path] = {}
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume.get("target", "")
        else:
            source, target, *_ = [*str(volume).split(":"), ""]
        if source.startswith("./"):
            mounts[target] = (COMPOSE_FILE.parent / source).resolve()
    return mounts


def profiled(profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose_services().items() if profile in (s.get("profiles") or [])}


def test_profiles_are_known_and_the_default_stack_never_needs_one() -> None:
    services = compose_services()
    for name, spec in services.items():
        assert set(spec.get("profiles") or []) <= PROFILES, f"{name}: unknown profile"
        if spec.get("profiles"):
            continue
        for dep in depends_on(spec):
            assert not services[dep].get("profiles"), (
                f"{name} (default stack) depends on {dep}, which only a profile starts"
            )
    assert set(profiled("observability")) >= {"prometheus", "grafana", "loki", "alloy"}


def test_every_repository_file_a_service_mounts_exists() -> None:
    for name, spec in compose_services().items():
        for target, source in bind_mounts(spec).items():
            assert source.exists(), f"{name}: mounts {source} at {target}: no such path"
            assert ROOT in source.parents, f"{name}: {source} is outside the repository"


def test_published_host_ports_do_not_collide() -> None:
    seen: dict[int, str] = {}
    for name, spec in compose_services().items():
        for host, _ in ports_of(name, spec):
            if host is None:
                continue
            assert host not in seen, f"{name} and {seen[host]} both publish port {host}"
            seen[host] = name


def test_prometheus_scrapes_every_service_on_its_port(containers: dict[str, Container]) -> None:
    spec = compose_services()["prometheus"]
    mounts = bind_mounts(spec)
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    targets: dict[str, str] = {}
    for job in config["scrape_configs"]:
        for group in job.get("static_configs") or []:
            for target in group["targets"]:
                if "component" in (group.get("labels") or {}):
                    targets[group["labels"]["component"]] = target
    expected = {
        service: f"{container.name}:{container.http_port}"
        for service, container in serving(containers).items()
    }
    assert targets == expected, "scrape each service's /metrics, labelled with its component"
    for target in expected.values():
        assert target.split(":")[0] in depends_on(spec), f"prometheus: depend on {target}"
    # The rules it loads are the ones promtool tests (deploy/observability/prometheus/rules).
    rule_dirs = {Path(pattern).parent.as_posix() for pattern in config["rule_files"]}
    assert rule_dirs == {"/etc/prometheus/rules"}
    assert mounts["/etc/prometheus/rules"] == OBSERVABILITY / "prometheus" / "rules"


def test_grafana_is_provisioned_with_the_dashboards_and_data_sources() -> None:
    spec = compose_services()["grafana"]
    mounts = bind_mounts(spec)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == OBSERVABILITY / "grafana" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "ekiben.yaml").read_text())
    paths = {p["options"]["path"] for p in providers["providers"]}
    assert len(paths) == 1
    path = paths.pop()
    assert mounts[path] == OBSERVABILITY / "grafana" / "dashboards", f"mount dashboards at {path}"
    assert list(mounts[path].glob("*.json")), "no dashboards to provision"
    sources = yaml.safe_load((provisioning / "datasources" / "ekiben.yaml").read_text())
    by_type = {s["type"]: urlsplit(s["url"]) for s in sources["datasources"]}
    services = compose_services()
    for kind in ("prometheus", "loki"):
        url = by_type[kind]
        assert url.hostname in profiled("observability"), f"{kind} data source: {url.netloc}"
        assert url.port is not None
        assert target_port_ok(url.hostname, url.port, {}), f"{kind}: nothing on {url.netloc}"
        assert url.hostname in depends_on(services["grafana"]), f"grafana: depend on {kind}"


def test_the_log_shipper_reads_every_service_and_writes_to_loki(
    containers: dict[str, Container],
) -> None:
    spec = compose_services()["alloy"]
    config = bind_mounts(spec)["/etc/alloy/config.alloy"].read_text()
    kept = re.search(r'com_docker_compose_service"\]\s*regex\s*=\s*"([^"]+)"', config)
    assert kept, "the Alloy configuration keeps no compose service"
    pattern = re.compile(kept.group(1))
    for container in containers.values():
        assert pattern.fullmatch(container.name), f"alloy ships no logs of {container.name}"
    assert "/var/run/docker.sock" in {v.split(":")[1] for v in spec["volumes"] if ":" in v}
    push = re.search(r'url\s*=\s*"(http://[^"]+)"', config)
    assert push, "no Loki push URL"
    url = urlsplit(push.group(1))
    assert url.hostname == "loki"
    assert url.port is not None
    assert target_port_ok("loki", url.port, {})
    assert "loki" in depends_on(spec)
