"""Sessions' JSON: what signing in answers."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field

from services.gateway.identity.schemas import (
    OrganizationSchema,
    UserSchema,
    organization_schema,
    user_schema,
)
from services.gateway.sessions.models import Session


class SessionSchema(BaseModel):
    uid: str
    method: str = Field(description="How it was signed in: `password` or `api_token`")
    user: UserSchema
    organization: OrganizationSchema
    role: str | None
    scopes: list[str]
    token_name: str | None = Field(description="The API token it was signed in with, if any")
    created_at: AwareDatetime
    expires_at: AwareDatetime


class SessionWithSecretSchema(SessionSchema):
    """The answer to signing in: the only one that carries the session's secret."""

    session: str = Field(description="Send it in the X-Ekiben-Session header")


def session_schema(session: Session) -> SessionSchema:
    return SessionSchema(
        uid=session.uid,
        method=session.method,
        user=user_schema(session.user),
        organization=organization_schema(session.organization),
        role=session.role.value if session.role else None,
        scopes=list(session.scopes),
        token_name=session.token_name,
        created_at=session.created_at,
        expires_at=session.expires_at,
    )


def session_with_secret_schema(session: Session, secret: str) -> SessionWithSecretSchema:
    return SessionWithSecretSchema(**session_schema(session).model_dump(), session=secret)
