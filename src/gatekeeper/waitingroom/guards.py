"""Who may call the waiting room's endpoints: the rule of ``access.py`` as endpoint guards.

==========================================  ===============================================
enqueue, status, events, page, jwks         anyone (public): ``business_id`` is the public
                                            id browsers send, or a secret key; the service
                                            resolves it from its in-process cache
verify, finish, ``GET``/``POST /config``    :func:`tenant_key`: a secret key as
                                            ``business_id``, or the public id with the admin
                                            token; the public id alone is 403 naming the key
                                            needed (``"needed": "secret_key"``)
``/admin/tenants*``                         :func:`tenant_admin`: the admin token, or an
                                            admin user's credentials when identity runs
==========================================  ===============================================

The guards are declared in the OpenAPI document: the security scheme ``tenantSecretKey`` (an
API key in the ``business_id`` header) or ``adminToken``, and the 401/403 they answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gatekeeper.endpoints import ADMIN_SCHEME, Call, Guard, admin_token
from gatekeeper.waitingroom.tenants import SECRET_PREFIX

if TYPE_CHECKING:
    from gatekeeper.waitingroom.access import TenantAccess

__all__ = ["TENANT_KEY_SCHEME", "tenant_admin", "tenant_key"]

TENANT_KEY_SCHEME: dict[str, Any] = {
    "type": "apiKey",
    "in": "header",
    "name": "business_id",
    "description": (
        f"One of the tenant's secret keys ({SECRET_PREFIX}...), for its backend. Browsers send "
        "the public id instead, which these endpoints refuse (403) unless the admin token comes "
        "with it."
    ),
}


def tenant_key(access: TenantAccess) -> Guard:
    """Backend-only endpoints: the principal is the tenant's public id, resolved from its
    secret key (or taken as sent, with the admin token)."""

    async def check(call: Call) -> str:
        return await access.private(
            call.header_text("business_id"),
            call.header_text("authorization"),
            f"{call.method} {call.path}",
        )

    return Guard(
        "tenant_key",
        check,
        security=({"tenantSecretKey": []}, {"adminToken": []}),
        schemes={"tenantSecretKey": TENANT_KEY_SCHEME, "adminToken": ADMIN_SCHEME},
        responses={
            401: "Unknown tenant, or a secret key that is wrong or expired (rotated out).",
            403: 'The public id without the admin token: a secret key is needed ("needed").',
            503: "The configuration database is unavailable.",
        },
        description=(
            "`business_id`: a secret key of the tenant; or its public id with "
            "`Authorization: Bearer <admin token>`."
        ),
    )


def tenant_admin(access: TenantAccess, users: Guard | None = None) -> Guard:
    """The tenant admin endpoints: the admin token; or, when the identity component runs
    (``users``: its admin guard), an admin user. The admin token is checked first, so it works
    while the identity database is down."""
    if users is None or users.check is None:
        return admin_token(lambda: access.admin_token)
    of_user = users.check
    is_async = users.is_async

    async def check(call: Call) -> Any:
        if access.is_admin(call.header_text("authorization")):
            return "admin-token"
        principal = of_user(call)
        return await principal if is_async else principal

    return Guard(
        "tenant_admin",
        check,
        security=users.security,
        schemes=users.schemes,
        responses=users.responses,
        description=users.description,
    )
