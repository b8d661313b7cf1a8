"""`memcollab serve`: the shared memory as an HTTP service (the `server` extra).

Modules without FastAPI (usable by the CLI without the extra): `db` (the service tables
beside the memory), `keys` (API keys), `attempts` (the attempt store), `provenance`,
`context` (`ServerContext`), `guard` (the write path: content screen, dedup, quarantine),
`feedback`, `judge`, `learn_queue` and `learner` (online learning), `proxy` and
`upstream` (the OpenAI-compatible proxy's logic and its models). With FastAPI: `app`
(`create_app`), `auth`, `schemas`, the `routes_*` routers, `metrics`, `mcp_http`; with the
MCP SDK: `mcp_tools`, `mcp_stdio`. This package imports none of them eagerly.
"""
