"""The registry: bento and model repositories, versions and their blobs in S3.

It answers commands from the gateway over NATS request/reply and tells the others
`bento.pushed`, `model.pushed` and the deletions through its outbox.
"""
