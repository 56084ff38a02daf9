"""Which built images the local backend removes from its layer store (pure logic)."""

from __future__ import annotations

from services.builder.adapters.buildah import StoredImage
from services.builder.backends.local import stale_images

PREFIX = "127.0.0.1:5000/ekiben/"


def image(created: int, *names: str) -> StoredImage:
    return StoredImage(id=f"id{created}", names=names, created=created)


def test_the_newest_built_images_stay_and_older_ones_go() -> None:
    images = [
        image(1, PREFIX + "greeter:a"),
        image(3, PREFIX + "greeter:c"),
        image(2, PREFIX + "iris:b"),
    ]
    assert stale_images(images, PREFIX, keep=2) == [PREFIX + "greeter:a"]
    assert stale_images(images, PREFIX, keep=1) == [PREFIX + "iris:b", PREFIX + "greeter:a"]
    assert stale_images(images, PREFIX, keep=3) == []


def test_images_not_built_here_are_never_touched_nor_counted() -> None:
    base = image(0, "127.0.0.1:5000/library/python:3.11-slim")
    other = image(5, "127.0.0.1:5000/elsewhere/app:v1")
    built = image(4, PREFIX + "greeter:a", "127.0.0.1:5000/elsewhere/alias:v1")
    older = image(2, PREFIX + "greeter:b")
    assert stale_images([base, other, built, older], PREFIX, keep=1) == [PREFIX + "greeter:b"]
    # An image with a name of its own outside the prefix loses only its built names.
    assert stale_images([built, image(9, PREFIX + "x:y")], PREFIX, keep=1) == [PREFIX + "greeter:a"]
