"""Request/reply contracts between services: the commands one service answers for others.

Events (facts) live in `shared.events`; these are commands that need an answer. Each
module names its service's commands and their request and response models; the owning
service answers them with `BackendRuntime.responders.add`, callers use `RpcClient.call`.
"""
