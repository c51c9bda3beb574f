"""Pseudonymous user ids: the secret's checks, the HMAC, the UDF, and where restricted tables live."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest

from shoprec import privacy, pseudonyms
from shoprec.config import ConfigError, load_config

PROJECT = Path(__file__).resolve().parents[2]
SECRET = b"0123456789abcdef0123456789abcdef-unit"


def test_pseudonym_is_the_truncated_hmac_sha256_of_the_id():
    # RFC 4231 test case 2 (key "Jefe"): the digest this must begin with, independent of the code.
    assert hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest().startswith(
        "5bdcc146bf60754e6a042426089575c7")
    assert privacy.pseudonym(b"Jefe", "what do ya want for nothing?") == "5bdcc146bf60754e6a042426089575c7"
    assert privacy.pseudonym(SECRET, "42") != privacy.pseudonym(SECRET + b"x", "42")
    assert privacy.pseudonym(SECRET, "42") != privacy.pseudonym(SECRET, "43")


@pytest.mark.parametrize("environ, message", [
    ({}, "SHOPREC_PSEUDONYM_SECRET (privacy.secret_env) is not set"),
    ({"SHOPREC_PSEUDONYM_SECRET": ""}, "is not set"),
    ({"SHOPREC_PSEUDONYM_SECRET": "short-secret"}, "is 12 bytes; at least 32"),
])
def test_a_missing_or_weak_secret_is_a_clear_error_that_does_not_show_it(environ, message):
    with pytest.raises(privacy.SecretError, match=re.escape(message)) as raised:
        privacy.load_secret("SHOPREC_PSEUDONYM_SECRET", environ)
    assert "short-secret" not in str(raised.value)


def test_load_secret_reads_the_named_variable():
    assert privacy.load_secret("MY_KEY", {"MY_KEY": SECRET.decode()}) == SECRET


def test_pseudonymize_and_id_map_on_spark(spark):
    events = spark.createDataFrame([("7", "a"), ("7", "b"), ("8", "a"), (None, "c")], "user_id string, item_id string")
    users = pseudonyms.id_map(events, "user_id", SECRET)
    assert sorted(map(tuple, users.collect())) == sorted([
        (privacy.pseudonym(SECRET, "7"), "7"), (privacy.pseudonym(SECRET, "8"), "8")])
    for broadcast in (True, False):
        pseudonymous = pseudonyms.pseudonymize(events, "user_id", users, broadcast=broadcast)
        assert pseudonymous.columns == ["user_id", "item_id"]
        assert sorted(map(tuple, pseudonymous.collect()), key=lambda r: (r[1], r[0] or "")) == sorted([
            (privacy.pseudonym(SECRET, "7"), "a"), (privacy.pseudonym(SECRET, "7"), "b"),
            (privacy.pseudonym(SECRET, "8"), "a"), (None, "c")], key=lambda r: (r[1], r[0] or ""))
    # The secret travels in the UDF's pickled function, not as a literal the UI or a log could show.
    plan = pseudonymous._jdf.queryExecution().toString()
    assert "user_pseudonym" in plan and SECRET.decode() not in plan


def test_restricted_tables_live_outside_the_warehouse(tmp_path):
    cfg = load_config(PROJECT / "conf/local.yaml", environ={"SHOPREC__WAREHOUSE__ROOT": str(tmp_path / "wh")})
    assert cfg.table_path("events_clean") == f"{tmp_path}/wh/events_clean"
    assert cfg.table_path("user_id_map") == f"{tmp_path}/wh_restricted/user_id_map"
    assert cfg.table_path("events_quarantine") == f"{tmp_path}/wh_restricted/events_quarantine"
    chosen = load_config(PROJECT / "conf/local.yaml", environ={
        "SHOPREC__WAREHOUSE__ROOT": str(tmp_path / "wh"), "SHOPREC__PRIVACY__RESTRICTED_ROOT": "restricted-here"})
    assert chosen.table_path("user_id_map") == str(Path("restricted-here").absolute() / "user_id_map")


@pytest.mark.parametrize("restricted", ["wh/private", "."])
def test_a_restricted_root_inside_or_around_the_warehouse_is_refused(tmp_path, monkeypatch, restricted):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="privacy.restricted_root: .* must lie outside warehouse.root"):
        load_config(PROJECT / "conf/local.yaml", environ={
            "SHOPREC__WAREHOUSE__ROOT": str(tmp_path / "wh"), "SHOPREC__PRIVACY__RESTRICTED_ROOT": restricted})


def test_pseudonymize_looks_users_up_by_every_key(spark):
    events = spark.createDataFrame([("7", "2026-01-01"), ("7", "2026-01-02")], "user_id string, ingest_batch string")
    users = spark.createDataFrame([("p1", "7", "2026-01-01"), ("p2", "7", "2026-01-02"), ("p3", "8", "2026-01-01")],
                                  "user_pseudonym string, user_id string, ingest_batch string")
    looked_up = pseudonyms.pseudonymize(events, "user_id", users, "ingest_batch")
    assert sorted(map(tuple, looked_up.collect())) == [("p1", "2026-01-01"), ("p2", "2026-01-02")]
    with pytest.raises(ValueError, match="missing required column.*ingest_batch"):
        pseudonyms.pseudonymize(events.drop("ingest_batch"), "user_id", users, "ingest_batch")
