"""Tenants and their API keys. A key reads `dc_<key id>_<secret>`; only the SHA-256 of the secret is stored.
The secret is 256 random bits, so a fast hash is enough (nothing to brute-force, unlike a password)."""
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.tables import ApiKey, GallerySession, Tenant

LOCAL = "local"  # the tenant of the embedded default (`denocap run`)
PREFIX = "dc"
ID = re.compile(r"[0-9a-f]{32}")  # every row id (uuid4 hex); anything else cannot exist
SESSION_HOURS = 12


class TenantError(ValueError):
    pass


@dataclass(frozen=True)
class NewKey:
    id: str
    tenant: str
    key: str  # shown once


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def tenant_named(session: Session, name: str, create: bool = False) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        if not create:
            raise TenantError(f"no tenant named {name!r}")
        tenant = Tenant(name=name)
        try:
            with session.begin_nested():
                session.add(tenant)
        except IntegrityError:  # made at the same moment by another process
            return tenant_named(session, name)
    return tenant


def create_key(session: Session, tenant_name: str, label: str = "") -> NewKey:
    """A new key for the tenant, which is created on its first key."""
    if not tenant_name.strip() or len(tenant_name) > 100:
        raise TenantError("a tenant name is 1 to 100 characters")
    tenant = tenant_named(session, tenant_name, create=True)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(tenant=tenant, digest=_digest(secret), label=label[:100])
    session.add(key)
    session.flush()
    return NewKey(key.id, tenant.name, f"{PREFIX}_{key.id}_{secret}")


def revoke_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id) if ID.fullmatch(key_id) else None
    if key is None:
        raise TenantError(f"no key {key_id!r}")
    key.revoked_at = key.revoked_at or datetime.now(UTC)
    return key


def list_keys(session: Session, tenant_name: str | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).join(Tenant).order_by(Tenant.name, ApiKey.created_at)
    if tenant_name:
        stmt = stmt.where(Tenant.name == tenant_name)
    return list(session.scalars(stmt))


def authenticate(session: Session, presented: str) -> ApiKey | None:
    """The key presented, when it is valid and not revoked; None for anything else."""
    prefix, _, rest = presented.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not ID.fullmatch(key_id) or not secret:
        return None
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.digest, _digest(secret)):
        return None
    return key


def start_session(session: Session, key: ApiKey) -> str:
    """A gallery sign-in with this key: the cookie value `<id>.<secret>`, valid for SESSION_HOURS, until ended, or
    until the key is revoked. The tenant's ended sessions are forgotten then: nothing else deletes them."""
    secret, now = secrets.token_urlsafe(32), datetime.now(UTC)
    session.execute(delete(GallerySession).where(GallerySession.tenant_id == key.tenant_id, or_(  # ended ones
        GallerySession.expires_at < now, GallerySession.revoked_at.is_not(None))))
    row = GallerySession(tenant_id=key.tenant_id, api_key_id=key.id, digest=_digest(secret),
                         expires_at=now + timedelta(hours=SESSION_HOURS))
    session.add(row)
    session.flush()
    return f"{row.id}.{secret}"


def _live_session(session: Session, cookie: str) -> GallerySession | None:
    session_id, _, secret = cookie.partition(".")
    if not ID.fullmatch(session_id) or not secret:
        return None
    row = session.get(GallerySession, session_id)
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.digest, _digest(secret)):
        return None
    if row.api_key is None or row.api_key.revoked_at is not None:  # a leaked key's revocation signs its browsers out
        return None
    return row if row.expires_at > datetime.now(UTC) else None


def session_tenant(session: Session, cookie: str) -> str | None:
    """The tenant id of a live gallery session; None for anything else."""
    row = _live_session(session, cookie)
    return row.tenant_id if row else None


def end_session(session: Session, cookie: str) -> None:
    if row := _live_session(session, cookie):
        row.revoked_at = datetime.now(UTC)
