"""The dashboard's pure logic: roles, listing queries, labels, manifests, CSRF."""

from __future__ import annotations

import pytest

from services.dashboard import service as ui
from services.dashboard.app import page_templates
from tests.fixtures.manifests import bento_manifest


def session(role: str, scopes: list[str]) -> dict[str, object]:
    return {
        "user": {"name": "u"},
        "organization": {"name": "default"},
        "role": role,
        "scopes": scopes,
        "method": "password",
        "expires_at": "",
    }


@pytest.mark.parametrize(
    ("role", "scopes", "write", "admin"),
    [
        ("guest", ["api"], False, False),
        ("developer", ["api"], True, False),
        ("developer", ["read_organization"], False, False),
        ("admin", ["api"], True, True),
        ("admin", ["write_organization"], True, False),
        ("admin", ["operate_organization"], True, True),
    ],
)
def test_what_a_viewer_may_do_follows_role_and_scopes(
    role: str, scopes: list[str], write: bool, admin: bool
) -> None:
    viewer = ui.Viewer.from_session(session(role, scopes))
    assert viewer.can_write is write
    assert viewer.is_admin is admin


def test_a_listing_query_becomes_the_gateways_q_language() -> None:
    query = ui.ListingQuery.parse(
        {"search": " iris ", "labels": "team=nlp, stage=prod", "sort": "largest", "page": "3"}
    )
    assert query.gateway_params() == {
        "q": "label:team=nlp label:stage=prod sort:size-desc",
        "start": "40",
        "count": "20",
        "search": "iris",
    }
    assert query.link(page=4) == "?search=iris&labels=team%3Dnlp+stage%3Dprod&sort=largest&page=4"
    odd = ui.ListingQuery.parse({"sort": "sideways", "page": "-2"})
    assert (odd.sort, odd.page) == ("newest", 1)
    assert ui.ListingQuery.parse({"page": "x"}).page == 1


def test_labels_are_read_one_per_line_and_bad_lines_say_why() -> None:
    assert ui.parse_labels("team=nlp\n stage = prod \n\nowner=") == [
        {"key": "team", "value": "nlp"},
        {"key": "stage", "value": "prod"},
        {"key": "owner", "value": ""},
    ]
    with pytest.raises(ValueError, match="key=value"):
        ui.parse_labels("team")
    with pytest.raises(ValueError, match="key=value"):
        ui.parse_labels("=x")


def test_a_manifest_shows_services_apis_with_schemas_and_models() -> None:
    manifest = bento_manifest("iris", models=["clf:m1"])
    manifest["schema"] = {
        "name": "Iris",
        "routes": [
            {
                "name": "classify",
                "route": "/classify",
                "description": "Sort a flower",
                "input": {"type": "object", "properties": {"x": {"type": "number"}}},
                "output": {"type": "string"},
            }
        ],
    }
    view = ui.manifest_view(manifest)
    assert view.entry_service == "Iris"
    assert [s.name for s in view.services] == ["Iris"]
    assert view.services[0].models == ["clf:m1"]
    assert view.models == ["clf:m1"]
    api = view.apis[0]
    assert (api.name, api.route, api.doc) == ("classify", "/classify", "Sort a flower")
    assert '"x"' in api.input
    assert '"string"' in api.output
    legacy = ui.manifest_view({"apis": {"predict": {"route": "/predict", "input_type": "JSON"}}})
    assert [(a.route, a.input) for a in legacy.apis] == [("/predict", "JSON")]
    assert ui.manifest_view(None).apis == []


def test_csrf_tokens_are_bound_to_the_session() -> None:
    one, two = ui.csrf_for_session("eks_a"), ui.csrf_for_session("eks_b")
    assert one != two
    assert one == ui.csrf_for_session("eks_a")
    assert ui.same_token(one, one)
    assert not ui.same_token(one, two)
    assert not ui.same_token("", "")
    assert not ui.same_token(None, one)


def test_sizes_times_and_links_read_well() -> None:
    assert ui.human_size(512) == "512 B"
    assert ui.human_size(1536) == "1.5 KiB"
    assert ui.human_size(3 * 1024**3) == "3.0 GiB"
    assert ui.when("2026-12-02T06:15:00+00:00") == "2026-12-02 06:15 UTC"
    assert ui.tag_link("model", "clf:m1") == "/models/clf/m1"
    assert ui.login_command("http://gw", "ekb_x") == (
        "bentoml cloud login --endpoint http://gw --api-token ekb_x"
    )


def test_the_navigation_names_every_page_once_with_admin_pages_marked() -> None:
    hrefs = [s.href for s in ui.NAV]
    assert len(hrefs) == len(set(hrefs))
    assert {s.href for s in ui.NAV if s.admins_only} == {"/members", "/audit"}


def test_the_feed_listens_for_every_event_type_of_the_contract() -> None:
    from shared.events import EVENT_TYPES  # noqa: PLC0415

    assert set(ui.ALL_EVENT_TYPES) == set(EVENT_TYPES)
    assert "deployment.status_changed" in ui.ALL_EVENT_TYPES
    assert {"bento.*", "build.*", "deployment.*", "model.*"} <= set(ui.EVENT_TYPES)


def test_a_builds_duration_reads_in_minutes_and_seconds() -> None:
    assert ui.duration("2026-12-02T06:00:00+00:00", "2026-12-02T06:01:05+00:00") == "1m 05s"
    assert ui.duration("2026-12-02T06:00:00+00:00", "2026-12-02T06:00:09+00:00") == "9s"
    assert ui.duration(None, None) == ""
    assert ui.duration("not a time", None) == ""


# --- the deploy form -------------------------------------------------------------------


class Fields(dict[str, object]):
    """A posted form: `getlist` for repeated fields, as Starlette's FormData."""

    def getlist(self, key: str) -> list[object]:
        value = self.get(key, [])
        return value if isinstance(value, list) else [value]


def test_the_deploy_form_becomes_the_clients_body_with_per_service_scaling_and_resources() -> None:
    form = ui.DeployForm.from_fields(
        Fields(
            bento=" iris:abc ",
            name="iris",
            cluster="default",
            envs="A=1\n\nB=x=y",
            secrets="s1, s2",
            access_authorization="1",
            service=["", "worker", ""],
            min_replicas=["1", "0", ""],
            max_replicas=["3", "", ""],
            cpu=["500m", "", ""],
            memory=["", "1Gi", ""],
        )
    )
    body = form.body(entry_service="Iris")
    assert body["bento"] == "iris:abc"
    assert body["name"] == "iris"
    assert body["envs"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}]
    assert body["secrets"] == ["s1", "s2"]
    assert body["access_authorization"] is True
    assert body["services"] == {
        "Iris": {
            "scaling": {"min_replicas": 1, "max_replicas": 3},
            "config_overrides": {
                "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "500m"}}
            },
        },
        "worker": {
            "scaling": {"min_replicas": 0, "max_replicas": None},
            "config_overrides": {
                "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}
            },
        },
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bento": "iris"}, "name:version"),
        ({"bento": "iris:1", "envs": "NOEQUALS"}, "NAME=value"),
        ({"bento": "iris:1", "service": ["a"], "min_replicas": ["x"]}, "whole number"),
        ({"bento": "iris:1", "service": ["a"], "min_replicas": ["-1"]}, "zero or more"),
        ({"bento": "iris:1", "service": ["a"], "min_replicas": ["3"], "max_replicas": ["2"]},
         "above the maximum"),
        ({"bento": "iris:1", "service": [""], "cpu": ["1"]}, "name the service"),
    ],
)  # fmt: skip
def test_the_deploy_form_names_the_field_it_refuses(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ui.DeployForm.from_fields(Fields(fields)).body()


def test_the_edit_form_is_filled_from_the_latest_revision() -> None:
    deployment = {
        "name": "iris",
        "cluster": {"name": "default"},
        "latest_revision": {
            "targets": [
                {
                    "bento": {"repository": {"name": "iris"}, "version": "v2"},
                    "config": {
                        "envs": [{"name": "A", "value": "1"}],
                        "secrets": ["s"],
                        "access_authorization": True,
                        "services": {
                            "Iris": {
                                "scaling": {"min_replicas": 2, "max_replicas": 4},
                                "config_overrides": {"resources": {"requests": {"cpu": "1"}}},
                            }
                        },
                    },
                }
            ]
        },
    }
    form = ui.DeployForm.from_deployment(deployment)
    assert (form.bento, form.envs, form.secrets, form.access_authorization) == (
        "iris:v2", "A=1", "s", True,
    )  # fmt: skip
    assert form.services == [ui.ServiceRow("Iris", "2", "4", "1", "")]
    assert [r.name for r in form.rows_with_blank()] == ["Iris", ""]
    # Sent back unchanged, it asks for the same configuration.
    assert form.body()["services"]["Iris"]["scaling"] == {"min_replicas": 2, "max_replicas": 4}


def test_a_row_without_a_service_waits_for_the_entry_service_in_the_first_check() -> None:
    form = ui.DeployForm.from_fields(Fields(bento="iris:1", service=[""], cpu=["1"]))
    assert form.needs_entry_service
    assert form.body(None)["services"] == {}
    assert list(form.body("Iris")["services"]) == ["Iris"]


def test_the_deploy_form_sends_the_ingress_and_edit_round_trips_it() -> None:
    form = ui.DeployForm.from_fields(
        Fields(
            bento="iris:1", ingress_enabled="1", ingress_host=" Iris.Example.com ",
            ingress_tls_secret="iris-tls",
        )
    )  # fmt: skip
    body = form.body()
    assert body["ingress"] == {
        "enabled": True, "host": "iris.example.com", "tls_secret_name": "iris-tls",
    }  # fmt: skip
    # An unticked box is a missing field: no ingress; empty host and secret are the defaults.
    off = ui.DeployForm.from_fields(Fields(bento="iris:1")).body()
    assert off["ingress"] == {"enabled": False, "host": None, "tls_secret_name": None}
    with pytest.raises(ValueError, match="TLS secret needs the ingress"):
        ui.DeployForm.from_fields(Fields(bento="iris:1", ingress_tls_secret="t")).body()
    # The edit form shows what the revision has; a revision without one, the default (on).
    deployment = {
        "name": "iris",
        "latest_revision": {"targets": [{
            "bento": {"repository": {"name": "iris"}, "version": "1"},
            "config": {"ingress": body["ingress"]},
        }]},
    }  # fmt: skip
    edit = ui.DeployForm.from_deployment(deployment)
    assert (edit.ingress_enabled, edit.ingress_host, edit.ingress_tls_secret) == (
        True, "iris.example.com", "iris-tls",
    )  # fmt: skip
    assert edit.body()["ingress"] == body["ingress"]
    default = ui.DeployForm.from_deployment({"latest_revision": {"targets": [{"config": {}}]}})
    assert default.ingress_enabled
    assert not default.ingress_host
    assert ui.DeployForm(services=[]).ingress_enabled  # the create form starts ticked


def test_the_pager_links_both_ways_with_the_listings_filters_and_only_where_there_is_a_page() -> (
    None
):
    templates = page_templates().env
    listing = templates.from_string(
        '{% from "_pager.html" import pager %}'
        "{% call(n) pager(paging) %}?search={{ search|urlencode }}&page_number={{ n }}{% endcall %}"
    )
    middle = listing.render(
        paging=ui.Paging.of({"total": 3 * ui.PAGE_SIZE, "items": [1]}, 2), search="a b"
    )
    assert '<a href="?search=a%20b&page_number=1" rel="prev">Previous</a>' in middle
    assert '<a href="?search=a%20b&page_number=3" rel="next">Next</a>' in middle
    assert "Page 2 of 3" in middle
    only = listing.render(paging=ui.Paging.of({"total": 1, "items": [1]}, 1), search="")
    assert "Page 1 of 1" in only
    assert "<a " not in only
    # Every listing draws its pager with the macro, and each template still compiles.
    for name in ("audit.html", "builds.html", "deployments.html", "versions.html"):
        assert templates.loader is not None
        source = templates.loader.get_source(templates, name)[0]
        assert "pager(paging)" in source, name
        assert '<nav class="pager"' not in source, name
        templates.get_template(name)
