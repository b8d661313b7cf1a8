"""`memcollab serve`: the shared memory as an HTTP service (the `server` extra).

Modules without FastAPI (usable by the CLI without the extra): `db` (the service tables
beside the memory), `keys` (API keys), `attempts` (the attempt store), `provenance`,
`context` (`ServerContext`). With FastAPI: `app` (`create_app`), `auth`, `schemas`,
`routes_memory`, `routes_attempts`, `routes_ops`, `metrics`. This package imports none of
them eagerly.
"""
