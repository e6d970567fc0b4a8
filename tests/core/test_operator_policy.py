"""Operator mode's pure policy layer: configuration, identity, routes and ownership (docs/deployment.md).
The prompt check is in test_operator_graph.py."""
from __future__ import annotations

import json

import pytest

from psa_model.operator.access import Ownership, route_key, user_may_call, view_allowed
from psa_model.operator.config import ConfigError, load_config, parse_config
from psa_model.operator.identity import identify, sha256_hex
from support.operator_policy_config import ALICE_TOKEN, ROOT_TOKEN, SECRET, raw_config


@pytest.fixture()
def config():
    return parse_config(raw_config())


# -- configuration ----------------------------------------------------------------------------------
def test_config_loads_toml_and_json_alike(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(f"""
[identity]
proxy_user_header = "X-PSA-User"
proxy_secret_header = "X-PSA-Secret"
proxy_secret_sha256 = "{sha256_hex(SECRET)}"

[users.alice]
profile = "alice.json"
token_sha256 = "{sha256_hex(ALICE_TOKEN)}"

[users.root]
admin = true
""")
    (tmp_path / "c.json").write_text(json.dumps({"identity": {}, "users": {
        "alice": {"profile": "alice.json", "token_sha256": sha256_hex(ALICE_TOKEN)}, "root": {"admin": True}}}))
    from_toml, from_json = load_config(toml), load_config(tmp_path / "c.json")
    assert from_toml.users == from_json.users
    assert from_toml.users["alice"].min_psa_scale == 1.0 and from_toml.proxy.user_header == "X-PSA-User"
    assert from_json.proxy is None


@pytest.mark.parametrize("change, words", [
    (lambda r: r["users"]["alice"].update(profil="x.json"), "unknown key"),
    (lambda r: r["users"]["bob"].pop("profile"), "needs a profile"),
    (lambda r: r["users"]["bob"].update(profile="../../secret.json"), "without '..'"),
    (lambda r: r["users"]["bob"].update(profile="/etc/passwd"), "relative"),
    (lambda r: r["users"]["bob"].update(min_psa_scale=-1), "min_psa_scale"),
    (lambda r: r["users"]["bob"].update(min_psa_scale=float("nan")), "min_psa_scale"),
    (lambda r: r["users"]["alice"].update(token_sha256="plain-token"), "SHA-256"),
    (lambda r: r["users"]["bob"].update(token_sha256=r["users"]["alice"]["token_sha256"]), "same token"),
    (lambda r: r["identity"].pop("proxy_secret_sha256"), "missing"),
    (lambda r: r["identity"].update(proxy_user_header="comfy-user"), "header name"),
    (lambda r: r["users"].update({"../x": {"admin": True}}), "user name"),
    (lambda r: r["policy"].update(allowed_nodes="KSampler"), "allowed_nodes"),
    (lambda r: r.update(users={}), "no user"),
])
def test_config_errors_name_the_key(change, words):
    raw = raw_config()
    change(raw)
    with pytest.raises(ConfigError, match=words):
        parse_config(raw)


def test_config_without_any_way_to_sign_in_is_refused():
    raw = raw_config()
    raw["identity"] = {}
    raw["users"]["alice"].pop("token_sha256")
    raw["users"]["root"].pop("token_sha256")
    with pytest.raises(ConfigError, match="nobody can sign in"):
        parse_config(raw)


def test_missing_and_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("[users\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


# -- identity ---------------------------------------------------------------------------------------
def test_identity_from_token_or_proxy(config):
    assert identify(config, {"Authorization": f"Bearer {ALICE_TOKEN}"}).user.name == "alice"
    assert identify(config, {"authorization": f"bearer {ROOT_TOKEN}"}).user.admin
    assert identify(config, {"X-PSA-User": "bob", "X-PSA-Secret": SECRET}).user.name == "bob"


@pytest.mark.parametrize("headers, reason", [
    ({}, "no_identity"),
    ({"comfy-user": "root"}, "no_identity"),                                   # ComfyUI's own header decides nothing
    ({"Authorization": "Bearer wrong"}, "unknown_token"),
    ({"Authorization": f"Basic {ALICE_TOKEN}"}, "bad_authorization"),
    ({"Authorization": "Bearer wrong", "X-PSA-User": "bob", "X-PSA-Secret": SECRET}, "unknown_token"),
    ({"X-PSA-User": "root"}, "bad_proxy_secret"),                              # forged proxy header
    ({"X-PSA-User": "root", "X-PSA-Secret": SECRET + "x"}, "bad_proxy_secret"),
    ({"X-PSA-User": "mallory", "X-PSA-Secret": SECRET}, "unknown_user"),
])
def test_identity_refusals(config, headers, reason):
    found = identify(config, headers)
    assert found.user is None and found.reason == reason


# -- routes, ownership ------------------------------------------------------------------------------
def test_route_gate_folds_api_twins_and_defaults_to_admin_only():
    assert route_key("HEAD", "/api/history/{prompt_id}") == ("GET", "/history/{prompt_id}")
    assert user_may_call("POST", "/api/prompt") and user_may_call("GET", "/view")
    for method, path in [("POST", "/free"), ("GET", "/internal/logs"), ("POST", "/upload/image"),
                         ("GET", "/userdata"), ("POST", "/manager/queue/install"), ("GET", "/psa/operator/status")]:
        assert not user_may_call(method, path)


@pytest.mark.parametrize("query, ok", [
    ({"filename": "a.png", "subfolder": "psa_users/alice", "type": "output"}, True),
    ({"filename": "a.png", "subfolder": "psa_users/alice/deeper"}, True),
    ({"filename": "a.png", "subfolder": "psa_users/bob"}, False),
    ({"filename": "a.png", "subfolder": "psa_users/alice/../bob"}, False),
    ({"filename": "a.png", "subfolder": "psa_users/alice2"}, False),
    ({"filename": "a.png"}, False),
    ({"filename": "a.png [output]", "subfolder": "psa_users/alice"}, False),
    ({"filename": "../a.png", "subfolder": "psa_users/alice"}, False),
    ({"filename": "a.png", "subfolder": "psa_users/alice", "type": "temp"}, False),
    ({"filename": "a.png", "subfolder": "psa_users\\alice"}, False),
])
def test_view_only_in_the_users_own_folder(query, ok):
    assert view_allowed(query, "psa_users", "alice") is ok


def test_ownership_first_user_keeps_an_id():
    owners = Ownership(limit=2)
    assert owners.claim("client", "c1", "alice") and owners.claim("client", "c1", "alice")
    assert not owners.claim("client", "c1", "bob")
    owners.claim("client", "c2", "bob")
    owners.claim("client", "c3", "bob")
    assert owners.owner("client", "c1") is None and owners.owner("client", "c3") == "bob"  # bounded


def test_operator_mode_is_off_without_the_environment_variable(monkeypatch):
    from operator_mode import install_from_environment

    monkeypatch.delenv("PSA_OPERATOR_CONFIG", raising=False)
    assert install_from_environment() is False
    monkeypatch.setenv("PSA_OPERATOR_CONFIG", "  ")
    assert install_from_environment() is False


def test_operator_mode_that_cannot_be_installed_stops_the_process(monkeypatch, tmp_path):
    """Without a PromptServer to hook (here: a ``server`` module without one), a configured operator mode
    must end the process rather than let ComfyUI serve unchecked prompts."""
    import sys
    import types

    from operator_mode import install_from_environment

    monkeypatch.setitem(sys.modules, "server", types.ModuleType("server"))
    monkeypatch.setenv("PSA_OPERATOR_CONFIG", str(tmp_path / "operator.toml"))
    with pytest.raises(SystemExit) as stopped:
        install_from_environment()
    assert stopped.value.code == 3
