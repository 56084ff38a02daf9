"""Registry credentials, and reading them from a `.dockerconfigjson` file.

A push (buildah) or a lookup (httpx) authenticates with either a username and password or an
auth file: the containers-auth.json / Docker config.json format, `{"auths": {host: {"auth":
base64("user:password")}}}`, which is also what a `kubernetes.io/dockerconfigjson` Secret
holds. Credential helpers (`credsStore`, `credHelpers`) are not supported.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from services.builder.adapters.containers import auth_json
from services.builder.settings import TargetRegistrySettings
from shared.errors import PermanentError


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: SecretStr

    def __repr__(self) -> str:
        return f"RegistryCredentials(username={self.username!r}, password=**********)"


Auth = RegistryCredentials | Path | None
"""Credentials, an auth file, or none (then `REGISTRY_AUTH_FILE` of the environment, if any)."""


def auth_from_settings(registry: TargetRegistrySettings) -> Auth:
    if registry.docker_config is not None:
        return registry.docker_config
    if registry.username is not None and registry.password is not None:
        return RegistryCredentials(registry.username, registry.password)
    return None


def _keys_for(host: str) -> list[str]:
    # Docker writes Docker Hub as a v1 URL; others appear bare or as https:// URLs.
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"{host}/v1/"]
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys.append("https://index.docker.io/v1/")
    return keys


def credentials_from_file(path: Path, host: str) -> RegistryCredentials | None:
    """The credentials for `host` in an auth file; None when it has no entry for it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PermanentError(
            f"cannot read registry auth file {path}: {exc}", reason="RegistryAuthInvalid"
        ) from exc
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in _keys_for(host):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return RegistryCredentials(entry["username"], SecretStr(entry["password"]))
        if isinstance(entry.get("auth"), str):
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise PermanentError(
                    f"registry auth file {path}: the entry of {key} is not base64(user:password)",
                    reason="RegistryAuthInvalid",
                ) from exc
            if sep:
                return RegistryCredentials(user, SecretStr(password))
    return None


def resolve_credentials(auth: Auth, host: str) -> RegistryCredentials | None:
    if isinstance(auth, Path):
        return credentials_from_file(auth, host)
    return auth


@contextlib.contextmanager
def auth_file_for(auth: Auth, host: str, *, directory: Path) -> Iterator[Path | None]:
    """A path for `--authfile`: the given file, or a private temporary one for credentials.

    Credentials never appear on a command line (where `ps` would show them).
    """
    if auth is None or isinstance(auth, Path):
        yield auth
        return
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".auth-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp: mode 0600
            out.write(auth_json(host, auth.username, auth.password.get_secret_value()))
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
