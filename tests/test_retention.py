"""Retention policies: parsing, first-match-wins, Celery's fallbacks, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from resultkit.errors import ConfigurationError
from resultkit.retention import RetentionPolicy
from tests.samples import RETENTION_POLICY


@pytest.mark.parametrize(
    ("name", "state", "lifetime"),
    [
        ("audit.log", "SUCCESS", None),
        ("audit.log", "FAILURE", None),
        ("reports.daily", "SUCCESS", 7 * 86400),
        ("reports.daily", "FAILURE", 30 * 86400),
        ("reports.daily", "RETRY", 3600),
        ("billing.charge", "FAILURE", 30 * 86400),
        ("billing.charge", "SUCCESS", 3600),
        (None, "SUCCESS", 3600),
    ],
)
def test_the_first_matching_rule_wins(name: str | None, state: str, lifetime: float | None) -> None:
    policy = RetentionPolicy.from_mapping(RETENTION_POLICY)
    assert policy.lifetime(name, state) == lifetime


def test_without_a_default_result_expires_applies() -> None:
    policy = RetentionPolicy.from_mapping({"rules": []}, result_expires=600)
    assert policy.lifetime("x", "SUCCESS") == 600


def test_result_failure_expires_applies_to_failures_no_rule_matches() -> None:
    policy = RetentionPolicy.from_mapping(
        {"rules": [{"task": "audit.*", "expires": None}], "default": "1h"},
        failure_expires=120,
        failure_expires_set=True,
    )
    assert policy.lifetime("other", "FAILURE") == 120
    assert policy.lifetime("audit.x", "FAILURE") is None
    assert policy.lifetime("other", "SUCCESS") == 3600


def test_an_app_without_a_policy_uses_celerys_settings() -> None:
    from celery import Celery

    app = Celery(set_as_current=False)
    app.conf.update(result_expires=900, result_failure_expires=60)
    policy = RetentionPolicy.from_app(app)
    assert (policy.lifetime("a", "SUCCESS"), policy.lifetime("a", "FAILURE")) == (900, 60)


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"rules": [{"state": "DONE", "expires": "1d"}]}, "unknown state 'DONE'"),
        ({"rules": [{"task": "a.*", "expires": "soon"}]}, "is not a duration"),
        ({"rules": [{"task": "a.*", "expires": -5}]}, "cannot be negative"),
        ({"rules": [{"task": "a.*"}]}, "'expires' is missing"),
        ({"rules": [{"task": "a.*", "expire": "1d"}]}, "unknown key 'expire'"),
        ({"rules": [], "defaults": "1d"}, "unknown key 'defaults'"),
        ({"rules": [{"task": "", "expires": "1d"}]}, "non-empty"),
        ({"rules": [{"task": "a[bc]", "expires": "1d"}]}, "character classes"),
        (
            {
                "rules": [
                    {"state": "FAILURE", "expires": "1d"},
                    {"task": "a.*", "state": "FAILURE", "expires": "2d"},
                ]
            },
            "rule 2 (task a.* and state FAILURE: 2d) can never match: rule 1",
        ),
        (
            {
                "rules": [
                    {"task": "reports.*", "expires": "1d"},
                    {"task": "reports.daily", "expires": "2d"},
                ]
            },
            "can never match",
        ),
        ({"rules": [{"expires": "1d"}, {"state": "SUCCESS", "expires": "2d"}]}, "can never match"),
        ({"rules": "audit.*"}, "'rules' must be a list"),
    ],
)
def test_invalid_policies_fail_with_a_clear_message(policy: dict, words: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RetentionPolicy.from_mapping(policy)
    assert words in str(info.value)


def test_a_narrower_rule_before_a_broader_one_is_fine() -> None:
    policy = RetentionPolicy.from_mapping(
        {
            "rules": [
                {"task": "reports.daily", "expires": "2d"},
                {"task": "reports.*", "expires": "1d"},
            ]
        }
    )
    assert policy.lifetime("reports.daily", "SUCCESS") == 2 * 86400
    assert policy.lifetime("reports.weekly", "SUCCESS") == 86400


def test_policy_files_in_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "policy.toml"
    toml.write_text(
        'default = "1h"\n'
        '[[rules]]\ntask = "audit.*"\nexpires = "forever"\n'
        '[[rules]]\nstate = "FAILURE"\nexpires = "30d"\n'
    )
    json_file = tmp_path / "policy.json"
    json_file.write_text(
        '{"rules": [{"task": "audit.*", "expires": null}, {"state": "FAILURE", "expires": "30d"}],'
        ' "default": "1h"}'
    )
    for path in (toml, json_file):
        policy = RetentionPolicy.from_file(path)
        assert policy.lifetime("audit.x", "SUCCESS") is None
        assert policy.lifetime("x", "FAILURE") == 30 * 86400
        assert policy.lifetime("x", "SUCCESS") == 3600


def test_a_broken_policy_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("rules = [ {task = ")
    with pytest.raises(ConfigurationError, match="is not valid TOML"):
        RetentionPolicy.from_file(path)
    with pytest.raises(ConfigurationError, match="cannot read the policy file"):
        RetentionPolicy.from_file(tmp_path / "missing.toml")
