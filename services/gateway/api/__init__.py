"""The gateway's public HTTP API: one router module per area (identity, artifacts, ...).

Every success is a 200 with a JSON body, since the bentoml client accepts nothing else;
failures are the shared JSON errors. Yatai-compatible routes live under `/api/v1`,
Ekiben's own under `/api/ekiben/v1`.
"""
