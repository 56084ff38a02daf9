"""The `kubernetes` backend on the real API server: one Job per build, its state the build's.

Pods on the test cluster's kwok nodes never run, so the Job's outcome is simulated the way
the Job controller would report it (its `/status`), after putting an image under the
build's tag (success) or not (failure). What is checked is the builder's side: the Job the
API server accepted carries the settings (image, registry Secret, service account, node
selector, tolerations, deadline, a presigned URL and no S3 credentials), and its success
gives a Bento, its failure `build.failed` and a False condition with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.builder.adapters.buildah import Buildah
from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.skopeo import Skopeo
from shared.kube.kinds import JOB
from tests.builder.conftest import BuilderStack, upload_bento, wait_for
from tests.builder.test_failures import unsafe_tar
from tests.builder.test_operator import conditions

pytestmark = [pytest.mark.k8s, pytest.mark.images, pytest.mark.timeout(600)]

JOB_SETTINGS = {
    "image": "quay.io/buildah/stable:v1.38.1",
    "registry_secret": "ekiben-regcred",
    "service_account": "ekiben-build",
    "node_selector": {"ekiben.dev/pool": "build"},
    "tolerations": [{"key": "ekiben.dev/build", "operator": "Exists", "effect": "NoSchedule"}],
    "active_deadline_seconds": 900,
    "download_url_seconds": 300,
}


def bento_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = b"FROM scratch\n"
        info = tarfile.TarInfo("env/docker/Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def job_of(bs: BuilderStack) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        jobs = await bs.objects.list(JOB, bs.namespace)
        return jobs[0] if jobs else None

    found: dict[str, Any] = await wait_for(probe, timeout=60, what="the build Job")
    return found


async def finish_job(bs: BuilderStack, job: dict[str, Any], *, succeeded: bool) -> None:
    """What the Job controller writes when the pod ends (kwok pods never end)."""
    stamp = now()
    if succeeded:
        status = {
            "startTime": stamp, "completionTime": stamp, "succeeded": 1, "active": 0,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods",
                 "lastTransitionTime": stamp, "lastProbeTime": stamp},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods",
                 "lastTransitionTime": stamp, "lastProbeTime": stamp},
            ],
        }  # fmt: skip
    else:
        status = {
            "startTime": stamp, "failed": 1, "active": 0,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit",
                 "lastTransitionTime": stamp, "lastProbeTime": stamp},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit",
                 "lastTransitionTime": stamp, "lastProbeTime": stamp},
            ],
        }  # fmt: skip
    for _ in range(10):
        live = await bs.objects.get(JOB, (bs.namespace, job["metadata"]["name"]))
        assert live is not None
        current = live.get("status") or {}
        live["status"] = {**current, **status}
        if current.get("startTime"):  # set by the Job controller already: immutable
            live["status"]["startTime"] = current["startTime"]
        try:
            await bs.objects.replace(JOB, live, subresource="status")
            return
        except Exception as exc:
            if getattr(exc, "status", None) != 409:
                raise
    raise AssertionError("could not write the Job's status")


async def test_a_job_per_build_carrying_the_settings_and_its_success_gives_a_bento(
    builder_stack: Callable[..., Any], busybox_image: str, container_env: ContainerEnvironment
) -> None:
    async with builder_stack(backend="kubernetes", job=JOB_SETTINGS) as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        archive = bento_tar()
        await upload_bento(bs, "jobbed", "v1", archive)
        job = await job_of(bs)
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == JOB_SETTINGS["image"]
        assert pod["serviceAccountName"] == "ekiben-build"
        assert pod["nodeSelector"] == {"ekiben.dev/pool": "build"}
        assert pod["tolerations"] == JOB_SETTINGS["tolerations"]
        assert pod["restartPolicy"] == "Never"
        assert job["spec"]["activeDeadlineSeconds"] == 900
        assert job["spec"]["backoffLimit"] == 0
        secret = next(v for v in pod["volumes"] if v["name"] == "registry-auth")["secret"]
        assert secret["secretName"] == "ekiben-regcred"
        env = {e["name"]: e.get("value", "") for e in container["env"]}
        assert "X-Amz-Signature=" in env["BENTO_URL"]  # presigned, short-lived
        assert "X-Amz-Expires=300&" in env["BENTO_URL"]  # job.download_url_seconds
        # The bytes the builder checked before writing the Job, which the Job insists on.
        assert env["BENTO_SHA256"] == hashlib.sha256(archive).hexdigest()
        assert not any(name.startswith("AWS") for name in env)
        s3_secret = bs.stack.registry.settings.s3.secret_access_key
        assert s3_secret.get_secret_value() not in str(job)
        owner = job["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "BentoRequest"

        [build] = await bs.builds()
        assert build["status"] == "building"
        resource = bs.resource_name("jobbed", "v1")

        async def building() -> dict[str, Any] | None:
            request = await bs.request(resource)
            ok = conditions(request).get("ImageBuilding", {}).get("status") == "True"
            return request if ok else None

        request = await wait_for(building, timeout=30, what="ImageBuilding=True")
        assert request["status"]["buildJobName"] == job["metadata"]["name"]

        # The Job "pushed" its image and completed.
        target = f"{build['image_repository']}:{build['image_tag']}"
        digest = await Buildah(container_env).push(busybox_image, target, tls_verify=False)
        await finish_job(bs, job, succeeded=True)
        done = await bs.build_done(build["id"], timeout=60)
        assert done["status"] == "succeeded", done
        assert done["digest"] == digest

        async def bento() -> dict[str, Any] | None:
            found: dict[str, Any] | None = await bs.bento(resource)
            return found

        published = await wait_for(bento, timeout=30, what="the Bento")
        assert published["spec"]["image"] == f"{build['image_repository']}@{digest}"
        assert len(await bs.events("build.completed")) == 1


async def test_a_failed_job_fails_the_build_with_the_reason(
    builder_stack: Callable[..., Any],
) -> None:
    async with builder_stack(backend="kubernetes", job=JOB_SETTINGS) as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        await upload_bento(bs, "jobbed", "v2", bento_tar())
        job = await job_of(bs)
        await finish_job(bs, job, succeeded=False)
        [build] = await bs.builds()
        done = await bs.build_done(build["id"], timeout=60)
        assert done["status"] == "failed"
        assert done["reason"] == "BackoffLimitExceeded"
        failed = await bs.events("build.failed")
        assert [e["data"]["reason"] for e in failed] == ["BackoffLimitExceeded"]

        resource = bs.resource_name("jobbed", "v2")

        async def marked() -> dict[str, Any] | None:
            request = await bs.request(resource)
            cond = conditions(request).get("ImageBuilding", {})
            return request if cond.get("reason") == "BackoffLimitExceeded" else None

        request = await wait_for(marked, timeout=30, what="ImageBuilding=False")
        assert conditions(request)["ImageBuilding"]["status"] == "False"
        assert "backoff limit" in conditions(request)["ImageBuilding"]["message"]
        assert await bs.bento(resource) is None


async def test_an_unsafe_archive_fails_the_build_before_any_job_is_written(
    builder_stack: Callable[..., Any],
) -> None:
    async with builder_stack(backend="kubernetes", job=JOB_SETTINGS) as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        await upload_bento(bs, "evil", "v1", unsafe_tar())

        async def build() -> dict[str, Any] | None:
            builds = await bs.builds()
            return builds[0] if builds else None

        first = await wait_for(build, timeout=30, what="the build")
        done = await bs.build_done(first["id"], timeout=60)
        assert done["status"] == "failed"
        assert done["reason"] == "UnsafeArchive"
        assert "outside-the-context" in done["message"]
        assert await bs.objects.list(JOB, bs.namespace) == []
        assert not list(bs.settings.containers.state_dir.rglob("outside-the-context"))
        failed = await bs.events("build.failed")
        assert [e["data"]["reason"] for e in failed] == ["UnsafeArchive"]


async def run_job_script(job: dict[str, Any], workspace: Path, env: dict[str, str]) -> str:
    """The Job's own command and environment, run here (kwok pods never run)."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e.get("value", "") for e in container["env"]}
    here = {"WORKSPACE": str(workspace), "DIGEST_FILE": str(workspace / "digest")}
    process = await asyncio.create_subprocess_exec(
        *container["command"],
        env={**os.environ, **env, **here, **job_env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    assert process.returncode is not None
    return f"exit {process.returncode}\n{text}"


async def test_the_job_script_builds_and_pushes_the_checked_bento_and_refuses_other_bytes(
    builder_stack: Callable[..., Any], tmp_path: Path, container_env: ContainerEnvironment
) -> None:
    # A vfs store of its own, as in the Job's emptyDir (the script asks for vfs).
    store = tmp_path / "job-store"
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{store}"\nrunroot = "{store}-run"\n')
    env = {"CONTAINERS_STORAGE_CONF": str(conf)}
    settings = {**JOB_SETTINGS, "registry_secret": None}
    async with builder_stack(backend="kubernetes", job=settings) as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        await upload_bento(bs, "scripted", "v1", bento_tar())
        job = await job_of(bs)
        [build] = await bs.builds()

        workspace = tmp_path / "workspace"
        workspace.mkdir()
        result = await run_job_script(job, workspace, env)
        assert result.startswith("exit 0\n"), result
        digest = (workspace / "digest").read_text().strip()
        assert digest.startswith("sha256:")
        target = f"{build['image_repository']}:{build['image_tag']}"
        inspected = await Skopeo(container_env).inspect(f"docker://{target}", tls_verify=False)
        assert inspected["Digest"] == digest

        # Other bytes behind the same URL (a re-push racing the Job): refused, not built.
        tampered = dict(job)
        container = dict(job["spec"]["template"]["spec"]["containers"][0])
        container["env"] = [
            {**e, "value": "0" * 64} if e["name"] == "BENTO_SHA256" else e for e in container["env"]
        ]
        tampered["spec"] = {"template": {"spec": {"containers": [container]}}}
        again = tmp_path / "again"
        again.mkdir()
        result = await run_job_script(tampered, again, env)
        assert result.startswith("exit 4\n"), result
        assert "not the one the builder checked" in result
        assert not (again / "context").exists()
