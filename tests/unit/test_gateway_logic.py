"""The gateway's pure logic, without servers: listing grammar, paging, roles, the token cache."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest

from services.gateway.artifacts.service import Listing, parse_listing
from services.gateway.identity.auth import Principal, TokenCache, check_role, has_role
from services.gateway.identity.models import ApiToken, Organization, Role, User
from services.gateway.identity.service import check_expiry, check_scopes
from services.gateway.schemas import MAX_PAGE_SIZE, MAX_START, parse_page
from shared.contracts import registry as reg
from shared.errors import Forbidden, InvalidInput

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORG = Organization(id=1, uid="o1", name="default", description="", created_at=NOW, updated_at=None)
USER = User(
    id=1, uid="u1", name="alice", email="", first_name="", last_name="", created_at=NOW,
    updated_at=None,
)  # fmt: skip


# --- listing ------------------------------------------------------------------------------------


def test_the_q_language_reads_labels_creator_status_sort_and_words() -> None:
    options = parse_listing(
        "label:team=nlp iris creator:bob status:success sort:size-asc", "v1", None
    )
    assert options["labels"] == [reg.Label(key="team", value="nlp")]
    assert options["creator"] == "bob"
    assert options["upload_status"] == "success"
    assert (options["sort"], options["descending"]) == ("size", False)
    assert options["search"] == "v1 iris"
    assert parse_listing(None, None, "build_at")["descending"] is True
    assert parse_listing("", None, None) == {"labels": []}


@pytest.mark.parametrize(
    ("q", "sort", "fragment"),
    [
        ("color:red", None, "unknown filter 'color'"),
        (None, "popularity", "unknown sort 'popularity'"),
        ("sort:size-up", None, "unknown sort 'size-up'"),
    ],
)
def test_the_q_language_refuses_what_it_does_not_know(
    q: str | None, sort: str | None, fragment: str
) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        parse_listing(q, None, sort)


def test_listing_fields_treat_empty_parameters_as_not_given() -> None:
    fields = Listing(start="", count="", search="", q="", sort="").command_fields(20)
    assert fields == {"start": 0, "count": 20, "labels": []}
    assert Listing(start="40", count="5").command_fields(20)["start"] == 40


@pytest.mark.parametrize(
    ("start", "count", "fragment"),
    [
        ("-1", "", "start: must be between 0"),
        (str(MAX_START + 1), "", "start: must be between 0"),
        (str(2**63), "", "start: must be between 0"),
        ("", "0", "count: must be between 1"),
        ("", str(MAX_PAGE_SIZE + 1), "count: must be between 1"),
        ("1e3", "", "start: expected an integer"),
        ("", "ten", "count: expected an integer"),
    ],
)
def test_paging_bounds(start: str, count: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        parse_page(start, count, "", default_count=20)


def test_paging_defaults_and_search() -> None:
    page = parse_page(" ", "", "  iris ", default_count=100)
    assert (page.start, page.count, page.search) == (0, 100, "iris")


# --- roles and scopes ----------------------------------------------------------------------------


def principal(role: Role, *scopes: str) -> Principal:
    return Principal(
        user=USER, org=ORG, role=role, token_uid="t", token_name="t", scopes=frozenset(scopes)
    )


@pytest.mark.parametrize(
    ("role", "scopes", "needed", "allowed"),
    [
        (Role.ADMIN, ("api",), Role.ADMIN, True),
        (Role.DEVELOPER, ("api",), Role.ADMIN, False),
        (Role.DEVELOPER, ("api",), Role.DEVELOPER, True),
        (Role.GUEST, ("api",), Role.DEVELOPER, False),
        (Role.GUEST, ("api",), Role.GUEST, True),
        (Role.ADMIN, ("read_organization",), Role.DEVELOPER, False),
        (Role.ADMIN, ("read_organization",), Role.GUEST, True),
        (Role.ADMIN, ("write_organization",), Role.DEVELOPER, True),
        (Role.ADMIN, ("write_organization",), Role.ADMIN, False),
        (Role.ADMIN, ("operate_organization",), Role.ADMIN, True),
        (Role.DEVELOPER, ("operate_organization",), Role.ADMIN, False),
    ],
)
def test_a_call_needs_both_the_role_and_a_scope(
    role: Role, scopes: tuple[str, ...], needed: Role, allowed: bool
) -> None:
    assert has_role(principal(role, *scopes), needed) is allowed
    if not allowed:
        with pytest.raises(Forbidden):
            check_role(principal(role, *scopes), needed)


def test_scopes_are_checked_deduplicated_and_default_to_full_access() -> None:
    assert check_scopes(None) == ("api",)
    assert check_scopes([" read_cluster ", "read_cluster", ""]) == ("read_cluster",)
    with pytest.raises(InvalidInput, match="unknown scope"):
        check_scopes(["root"])


def test_an_expiry_must_lie_ahead_and_a_naive_one_is_utc() -> None:
    assert check_expiry(None) is None
    naive = (NOW + timedelta(days=1)).replace(tzinfo=None)
    assert check_expiry(naive, now=NOW) == NOW + timedelta(days=1)
    with pytest.raises(InvalidInput, match="in the past"):
        check_expiry(NOW - timedelta(seconds=1), now=NOW)


# --- the token cache -----------------------------------------------------------------------------


def token(uid: str) -> ApiToken:
    return ApiToken(
        id=1, uid=uid, name=uid, description="", prefix="ekb_abcdef", scopes=("api",), user=USER,
        organization=ORG, role=Role.ADMIN, created_at=NOW, updated_at=None, expired_at=None,
        last_used_at=None, revoked_at=None, is_expired=False,
    )  # fmt: skip


def test_the_token_cache_expires_entries_evicts_the_oldest_and_forgets_by_uid() -> None:
    cache = TokenCache(ttl=60, size=2)
    cache.put(b"a", token("ta"))
    cache.put(b"b", token("tb"))
    assert cache.get(b"a") == token("ta")  # now the most recent
    cache.put(b"c", token("tc"))
    assert cache.get(b"b") is None  # least recently used, evicted
    assert cache.get(b"a") is not None
    cache.forget("ta")
    assert cache.get(b"a") is None
    assert cache.get(b"c") == token("tc")

    short = TokenCache(ttl=0.01)
    short.put(b"x", token("tx"))
    time.sleep(0.02)
    assert short.get(b"x") is None
    assert dataclasses.replace(token("tx"), uid="other").uid == "other"
