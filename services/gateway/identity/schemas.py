"""Identity's JSON answers: users, organizations, members, API tokens."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel

from services.gateway.identity.models import ApiToken, Member, Organization, User
from services.gateway.schemas import ResourceSchema


class UserSchema(ResourceSchema):
    """The client needs name, email, first_name and last_name; the rest helps the dashboard."""

    resource_type: str = "user"
    email: str
    first_name: str
    last_name: str


class OrganizationSchema(ResourceSchema):
    resource_type: str = "organization"
    description: str


class MemberSchema(BaseModel):
    role: str
    user: UserSchema
    organization: OrganizationSchema
    created_at: AwareDatetime
    updated_at: AwareDatetime | None


class ApiTokenSchema(ResourceSchema):
    """A token as lists and lookups show it: never the secret (the class has no field for it)."""

    resource_type: str = "api_token"
    description: str
    scopes: list[str]
    user: UserSchema
    organization: OrganizationSchema
    expired_at: AwareDatetime | None
    last_used_at: AwareDatetime | None
    is_expired: bool
    is_api_token: bool = True
    is_organization_token: bool = False
    is_global_access: bool = False
    # The first characters of the secret, enough to tell tokens apart, useless to an attacker.
    token_prefix: str


class ApiTokenWithSecretSchema(ApiTokenSchema):
    """The answer to a token creation: the only response that carries the secret."""

    token: str


class VersionSchema(BaseModel):
    version: str
    git_commit: str
    build_date: str


# --- builders ---------------------------------------------------------------------------------


def user_schema(user: User) -> UserSchema:
    return UserSchema(
        uid=user.uid,
        created_at=user.created_at,
        updated_at=user.updated_at,
        deleted_at=None,
        name=user.name,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
    )


def organization_schema(organization: Organization) -> OrganizationSchema:
    return OrganizationSchema(
        uid=organization.uid,
        created_at=organization.created_at,
        updated_at=organization.updated_at,
        deleted_at=None,
        name=organization.name,
        description=organization.description,
    )


def member_schema(member: Member) -> MemberSchema:
    return MemberSchema(
        role=member.role.value,
        user=user_schema(member.user),
        organization=organization_schema(member.organization),
        created_at=member.created_at,
        updated_at=member.updated_at,
    )


def api_token_schema(token: ApiToken) -> ApiTokenSchema:
    return ApiTokenSchema(
        uid=token.uid,
        created_at=token.created_at,
        updated_at=token.updated_at,
        deleted_at=token.revoked_at,
        name=token.name,
        description=token.description,
        scopes=list(token.scopes),
        user=user_schema(token.user),
        organization=organization_schema(token.organization),
        expired_at=token.expired_at,
        last_used_at=token.last_used_at,
        is_expired=token.is_expired,
        token_prefix=token.prefix,
    )


def issued_token_schema(token: ApiToken, secret: str) -> ApiTokenWithSecretSchema:
    return ApiTokenWithSecretSchema.model_validate(
        {**api_token_schema(token).model_dump(), "token": secret}
    )
