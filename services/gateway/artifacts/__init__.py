"""Bentos and models: the Yatai-compatible API the bentoml client speaks, over the registry."""
