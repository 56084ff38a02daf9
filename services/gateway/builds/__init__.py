"""Builds over HTTP: request a build of a bento, list and read builds, stream their logs."""
