"""The builder's adapters to the outside world: container tools, OCI registries, archives.

- `containers`: the configuration files buildah/podman/skopeo run with, from the settings.
- `buildah`: build a Dockerfile, push the image, clean up working containers.
- `registry`: an OCI distribution API client (httpx): does an image exist, its digest.
- `skopeo`: inspect and copy images between registries and archives.
- `podman`: run an image as a container (tests, local smoke checks).
- `bento_archive`: extract a bento tar safely into a build context.
- `process`: the async subprocess runner under all of them.
- `tools`: `ContainerTools.from_settings(settings)`, all of the above configured at once.
"""
