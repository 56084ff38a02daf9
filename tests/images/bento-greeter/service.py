"""A small BentoML 1.2+ service with no ML dependencies, for the image-build tests."""

import bentoml

GREETING = "Hello"


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 30})
class Greeter:
    @bentoml.api
    def greet(self, name: str = "world") -> str:
        return f"{GREETING}, {name}!"

    @bentoml.api
    def add(self, a: int, b: int) -> int:
        return a + b
