"""Drives Jet Fleet through a client generated from openapi/openapi.json, without hand edits.

Usage: smoke.py BASE_URL TENANT_ID ADMIN_KEY. Prints one JSON object of observations; the
Rust test `generated_client.rs` asserts on them.
"""

import json
import sys
from uuid import UUID

from jet_fleet_api_client import AuthenticatedClient
from jet_fleet_api_client.api.api_keys import create_api_key, list_api_keys
from jet_fleet_api_client.api.auth import get_current_user
from jet_fleet_api_client.api.roles import create_role, get_role, list_roles
from jet_fleet_api_client.api.tenants import get_tenant
from jet_fleet_api_client.models import AuthType, CreateApiKey, CreateRole, ErrorBody, RoleOut


def main() -> None:
    base, tenant, admin_key = sys.argv[1], UUID(sys.argv[2]), sys.argv[3]
    admin = AuthenticatedClient(base_url=base, token=admin_key, prefix="api_key")
    seen = {}

    role = create_role.sync(tenant_id=tenant, client=admin,
                            body=CreateRole(role_title="generated", permissions=["tenant:role:list"]))
    assert isinstance(role, RoleOut), role
    seen["role_title"] = role.role_title
    seen["role_permissions"] = [p.permission_title for p in role.permissions]

    key = create_api_key.sync(tenant_id=tenant, client=admin,
                              body=CreateApiKey(api_key_title="generated", role_i_ds=[role.role_id]))
    seen["key_length"] = len(key.api_key)
    seen["key_roles"] = [str(r) for r in key.role_i_ds]

    restricted = AuthenticatedClient(base_url=base, token=key.api_key, prefix="api_key")
    page = list_roles.sync(tenant_id=tenant, client=restricted, page_size=50)
    seen["restricted_list_total"] = page.total_count
    denied = create_role.sync_detailed(tenant_id=tenant, client=restricted, body=CreateRole(role_title="nope"))
    seen["denied_status"] = denied.status_code.value
    seen["denied_code"] = denied.parsed.code if isinstance(denied.parsed, ErrorBody) else None
    missing = get_role.sync_detailed(tenant_id=tenant, role_id=UUID(int=0), client=admin)
    seen["missing_status"] = missing.status_code.value
    seen["missing_code"] = missing.parsed.code if isinstance(missing.parsed, ErrorBody) else None

    detail = get_tenant.sync(tenant_id=tenant, client=admin)
    seen["tenant_api_keys"] = detail.counts.api_keys
    keys = list_api_keys.sync(tenant_id=tenant, client=admin)
    seen["listed_keys"] = keys.total_count

    # Status and type fields are enum classes, not strings.
    me = get_current_user.sync(client=admin)
    seen["auth_type_is_enum"] = isinstance(me.auth_type, AuthType)
    seen["auth_type"] = me.auth_type.value
    # An empty title is refused by the schema's minLength.
    empty = create_role.sync_detailed(tenant_id=tenant, client=admin, body=CreateRole(role_title=""))
    seen["empty_title_status"] = empty.status_code.value
    seen["empty_title_code"] = empty.parsed.code if isinstance(empty.parsed, ErrorBody) else None
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
