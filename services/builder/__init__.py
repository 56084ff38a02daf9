"""The builder: turns pushed bentos into OCI images (`BentoRequest` -> image -> `Bento`).

It listens to `bento.pushed` and `build.requested` and tells `build.started`,
`build.completed` and `build.failed`.
"""
