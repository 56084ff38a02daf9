"""Event subscribers of the builder: what starts a build.

- `bento.pushed` (consumer `builder-bento-pushed`): under the `policy` setting, `on-push`
  (the default) requests a build at once; `on-deploy` and `never` leave it to
  `build.requested`.
- `build.requested` (consumer `builder-build-requested`): from the deployer (which names the
  cluster and namespace it wants the Bento in) or anyone else; the builder's own (it emits
  one for every build it records) are skipped. A request for another cluster is ignored.

Both are idempotent: the event id is recorded in the transaction that records the build, so
a redelivery finds it and does nothing; and a build that already covers the bento's
content-derived tag is reused rather than repeated. A bento that is gone or was never
uploaded is logged and acknowledged (retrying cannot help).
"""

from __future__ import annotations

from services.builder.service import SOURCE, BuildService
from services.builder.settings import BuilderSettings
from shared.bus import Delivery
from shared.contracts.builder import RequestBuild
from shared.errors import PermanentError
from shared.events import AnyEvent
from shared.events.types import BentoPushed, BuildRequested
from shared.logging import get_logger
from shared.service import BackendRuntime

log = get_logger(__name__)

BENTO_PUSHED_CONSUMER = "builder-bento-pushed"
BUILD_REQUESTED_CONSUMER = "builder-build-requested"
_TRIGGER = {"bento.pushed": "push", "manual": "manual", "deployment": "deployment"}


def register(runtime: BackendRuntime, service: BuildService, settings: BuilderSettings) -> None:
    async def on_bento_pushed(event: AnyEvent, delivery: Delivery) -> None:
        if not isinstance(event, BentoPushed) or settings.policy != "on-push":
            return
        ref = event.data.artifact
        request = RequestBuild(
            organization=ref.organization,
            bento_name=ref.name,
            bento_version=ref.version,
            trigger="push",
            requested_by=event.data.pushed_by,
        )
        try:
            await service.request_build(request, event=(delivery.consumer, event.id))
        except PermanentError as exc:
            log.warning("builder.push.ignored", bento=ref.tag, reason=exc.reason, error=str(exc))

    async def on_build_requested(event: AnyEvent, delivery: Delivery) -> None:
        if not isinstance(event, BuildRequested) or event.source == SOURCE:
            return
        data = event.data
        if data.cluster is not None and data.cluster != settings.cluster_name:
            return
        request = RequestBuild(
            organization=data.bento.organization,
            bento_name=data.bento.name,
            bento_version=data.bento.version,
            force=data.force,
            trigger=_TRIGGER[data.reason],
            requested_by=data.requested_by,
            namespace=data.namespace,
        )
        try:
            await service.request_build(
                request,
                build_id=data.build_id,
                event=(delivery.consumer, event.id),
                emit_requested=False,
            )
        except PermanentError as exc:
            log.warning(
                "builder.request.ignored", bento=data.bento.tag, reason=exc.reason, error=str(exc)
            )

    runtime.subscribe(consumer=BENTO_PUSHED_CONSUMER, handler=on_bento_pushed, events=[BentoPushed])
    runtime.subscribe(
        consumer=BUILD_REQUESTED_CONSUMER, handler=on_build_requested, events=[BuildRequested]
    )
