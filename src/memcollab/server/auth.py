"""Authentication and namespace binding: `Authorization: Bearer KEY` -> a `Principal`.

Every data endpoint depends on `require(scope)`. The rules, the same for every endpoint:

* no key, a malformed, unknown or revoked key: **401** (`WWW-Authenticate: Bearer`);
* a key whose scope is below the endpoint's: **403**;
* a request that names a namespace other than the key's (the `namespace` query parameter
  any data endpoint accepts, or a `namespace` field in a body or an import line): **403**,
  and nothing is read or written;
* a record or attempt id that belongs to another namespace: **404**, exactly as if it did
  not exist (a key learns nothing about other namespaces).

Scopes (read < write < admin; a key may use every endpoint of its scope and below):

* read: POST /v1/search, GET /v1/records, GET /v1/records/{id},
  GET /v1/records/{id}/history, GET /v1/export, GET /v1/stats, GET /v1/attempts,
  GET /v1/attempts/{id}, GET /v1/tasks/{task_id}/attempts, GET /v1/tasks/contrasting,
  GET /v1/whoami, GET /v1/browse (the browser page's data), GET /v1/models;
* write: POST /v1/records, POST /v1/attempts, POST /v1/attempts/{id}/verdict,
  POST /v1/chat/completions (it records an attempt), POST /v1/feedback;
* admin: POST /v1/records/{id}/flag, POST /v1/records/{id}/unflag, POST /v1/import,
  POST /v1/records/{id}/release (a trusted admin key only: an untrusted key's records
  are quarantined, and it cannot release any).

No key is needed for GET /v1/health, GET /v1/ready, GET /metrics, /docs and /openapi.json,
and the browser page /browse with its script and style (they show no memory content).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from memcollab.server.context import ServerContext
from memcollab.server.keys import NAMESPACE_PATTERN, InvalidKeyError, KeyInfo, Scope

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key from `memcollab keys create` (or the one `memcollab serve` "
    "printed on a fresh memory), sent as `Authorization: Bearer KEY`.",
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its namespace (the only one it may touch), its scope."""

    key_id: str
    namespace: str
    scope: Scope
    trusted: bool = True
    """False for a key created untrusted: what it adds or imports is quarantined."""

    @classmethod
    def of(cls, info: KeyInfo) -> Principal:
        """The caller holding the key `info`."""
        return cls(info.key_id, info.namespace, info.scope, info.trusted)

    @property
    def actor(self) -> str:
        """How flag histories name this caller."""
        return f"key:{self.key_id}"


def get_context(request: Request) -> ServerContext:
    """The process's ServerContext (set by `create_app`)."""
    context: ServerContext = request.app.state.context
    return context


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def other_namespace(principal: Principal, named: str) -> HTTPException:
    """The 403 of a request naming a namespace that is not the key's."""
    return HTTPException(
        403,
        f"this key is bound to namespace {principal.namespace!r} and cannot use "
        f"namespace {named!r}",
    )


def require(scope: Scope) -> Callable[..., Principal]:
    """A dependency: the caller's Principal, if its key is live, of `scope` or above, and
    the request names no other namespace; else 401 / 403 as the module docstring says."""

    def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        namespace: Annotated[
            str | None,
            Query(
                pattern=NAMESPACE_PATTERN,
                description="Optional: the namespace the caller expects; any other than "
                "the key's is refused with 403.",
            ),
        ] = None,
    ) -> Principal:
        if credentials is None:
            raise unauthorized("missing API key: send the header Authorization: Bearer KEY")
        try:
            info = get_context(request).keys.verify(credentials.credentials)
        except InvalidKeyError:
            raise unauthorized("invalid or revoked API key") from None
        who = Principal.of(info)
        if not info.allows(scope):
            raise HTTPException(
                403, f"this key's scope is {info.scope!r}; this endpoint needs {scope!r}"
            )
        if namespace is not None and namespace != info.namespace:
            raise other_namespace(who, namespace)
        request.state.principal = who
        return who

    principal.required_scope = scope  # type: ignore[attr-defined]  # read by tests and docs
    return principal


ReadKey = Annotated[Principal, Depends(require("read"))]
WriteKey = Annotated[Principal, Depends(require("write"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]
Context = Annotated[ServerContext, Depends(get_context)]
