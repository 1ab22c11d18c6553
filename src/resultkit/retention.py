"""Retention policies: how long each task's results live, by task name and state.

The settings shape (``resultkit_retention`` in the app's configuration, or a
TOML/JSON file given to ``resultkit cleanup --policy``)::

    resultkit_retention = {
        "rules": [
            {"task": "audit.*", "expires": None},                    # keep forever
            {"task": "reports.*", "state": "SUCCESS", "expires": "7d"},
            {"state": "FAILURE", "expires": "30d"},
        ],
        "default": "1h",
    }

The first rule that matches wins.  Without a matching rule, a FAILURE lives
``result_failure_expires`` when that is set, everything else ``default``, or
``result_expires`` when the policy has no default.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .durations import expiry_seconds, format_duration, parse_duration
from .errors import ConfigurationError

__all__ = ["FOREVER", "RetentionPolicy", "RetentionRule"]

#: A lifetime of None means "keep forever".
FOREVER = None

_RULE_KEYS = {"task", "state", "expires"}
_POLICY_KEYS = {"rules", "default"}


def _known_states() -> frozenset[str]:
    from celery import states

    return frozenset(states.ALL_STATES)


def _lifetime(value: Any, where: str) -> float | None:
    if value is None:
        return FOREVER
    try:
        return parse_duration(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _states(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, str) else list(value)
    known = _known_states()
    out = set()
    for item in items:
        state = str(item).upper()
        if state not in known:
            raise ConfigurationError(
                f"{where}: unknown state {item!r}; Celery's states are {', '.join(sorted(known))}"
            )
        out.add(state)
    return frozenset(out)


@dataclass(frozen=True)
class RetentionRule:
    """One rule: task-name globs and states it applies to, and the lifetime it gives."""

    tasks: tuple[str, ...] = ()
    states: frozenset[str] = frozenset()
    #: Seconds, or None to keep forever.
    expires: float | None = None

    def matches(self, name: str | None, state: str | None) -> bool:
        if self.states and state not in self.states:
            return False
        if self.tasks:
            return name is not None and any(fnmatch.fnmatchcase(name, p) for p in self.tasks)
        return True

    def covers(self, other: RetentionRule) -> bool:
        """True when this rule matches everything *other* matches (so *other* never wins)."""
        if self.states and (not other.states or not other.states <= self.states):
            return False
        if not self.tasks:
            return True
        if not other.tasks:
            return False
        return all(any(fnmatch.fnmatchcase(p, mine) for mine in self.tasks) for p in other.tasks)

    def describe(self) -> str:
        parts = []
        if self.tasks:
            parts.append("task " + "|".join(self.tasks))
        if self.states:
            parts.append("state " + "|".join(sorted(self.states)))
        lifetime = "forever" if self.expires is None else format_duration(self.expires)
        return f"{' and '.join(parts) or 'every result'}: {lifetime}"


@dataclass(frozen=True)
class RetentionPolicy:
    """Rules (first match wins) and the fallbacks Celery's own settings give."""

    rules: tuple[RetentionRule, ...] = ()
    #: Lifetime when no rule matches (None: forever).
    default: float | None = 86400.0
    #: Lifetime of a FAILURE no rule matches (``result_failure_expires``), if set.
    failure_default: float | None = field(default=None)
    failure_default_set: bool = False

    def lifetime(self, name: str | None, state: str | None) -> float | None:
        """Seconds a result of task *name* in *state* lives (None: forever)."""
        for rule in self.rules:
            if rule.matches(name, state):
                return rule.expires
        if state == "FAILURE" and self.failure_default_set:
            return self.failure_default
        return self.default

    @property
    def lifetimes(self) -> set[float | None]:
        out = {r.expires for r in self.rules} | {self.default}
        if self.failure_default_set:
            out.add(self.failure_default)
        return out

    # ---------------------------------------------------------- building
    @classmethod
    def uniform(cls, seconds: float | None) -> RetentionPolicy:
        """Every result lives *seconds* (``--older-than``)."""
        return cls((), seconds)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        result_expires: float | None = 86400.0,
        failure_expires: float | None = None,
        failure_expires_set: bool = False,
        source: str = "resultkit_retention",
    ) -> RetentionPolicy:
        """Validate and build a policy; every problem raises a one-line ConfigurationError."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{source} must be a mapping with 'rules' and 'default'")
        unknown = set(data) - _POLICY_KEYS
        if unknown:
            raise ConfigurationError(
                f"{source}: unknown key {sorted(unknown)[0]!r}; a policy has 'rules' and 'default'"
            )
        raw_rules = data.get("rules") or []
        if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, (str, bytes)):
            raise ConfigurationError(f"{source}: 'rules' must be a list of rules")
        rules = [cls._rule(raw, f"{source} rule {i + 1}") for i, raw in enumerate(raw_rules)]
        for i, rule in enumerate(rules):
            for j, earlier in enumerate(rules[:i]):
                if earlier.covers(rule):
                    raise ConfigurationError(
                        f"{source} rule {i + 1} ({rule.describe()}) can never match: "
                        f"rule {j + 1} ({earlier.describe()}) matches everything it would; "
                        "move it up or remove it"
                    )
        default = (
            _lifetime(data["default"], f"{source} default") if "default" in data else result_expires
        )
        return cls(tuple(rules), default, failure_expires, failure_expires_set)

    @staticmethod
    def _rule(raw: Any, where: str) -> RetentionRule:
        if not isinstance(raw, Mapping):
            raise ConfigurationError(
                f"{where} must be a mapping like {{'task': 'a.*', 'expires': '7d'}}"
            )
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown key {sorted(unknown)[0]!r}; "
                "a rule has 'task', 'state' and 'expires'"
            )
        if "expires" not in raw:
            raise ConfigurationError(
                f"{where}: 'expires' is missing (a duration, or None for forever)"
            )
        tasks_value = raw.get("task")
        tasks: tuple[str, ...] = ()
        if tasks_value is not None:
            tasks = (tasks_value,) if isinstance(tasks_value, str) else tuple(tasks_value)
            if not tasks or any(not isinstance(t, str) or not t.strip() for t in tasks):
                raise ConfigurationError(f"{where}: 'task' must be a non-empty name or glob")
            if any("[" in t for t in tasks):
                raise ConfigurationError(
                    f"{where}: character classes ([...]) are not supported in task patterns; "
                    "use * and ?"
                )
        return RetentionRule(
            tasks, _states(raw.get("state"), where), _lifetime(raw["expires"], where)
        )

    @classmethod
    def from_file(cls, path: str | Path, **fallbacks: Any) -> RetentionPolicy:
        """Read a policy from a TOML or JSON file (same shape as the setting)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the policy file {path}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"the policy file {path} is not UTF-8 text (byte {exc.start}): "
                "write it as TOML or JSON in UTF-8"
            ) from None
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{path} is not valid JSON: {exc}") from None
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:
                import tomli as tomllib
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
            data = _toml_forever(data)
        return cls.from_mapping(data, source=str(path), **fallbacks)

    @classmethod
    def from_app(cls, app: Any, override: Mapping[str, Any] | None = None) -> RetentionPolicy:
        """The app's ``resultkit_retention`` (or *override*), Celery's settings as fallbacks."""
        fallbacks = cls.celery_fallbacks(app)
        data = override if override is not None else app.conf.get("resultkit_retention")
        if data is None:
            return cls(
                (),
                fallbacks["result_expires"],
                fallbacks["failure_expires"],
                fallbacks["failure_expires_set"],
            )
        return cls.from_mapping(data, **fallbacks)

    @classmethod
    def resolve(
        cls, app: Any, policy: str | Path | RetentionPolicy | None = None
    ) -> RetentionPolicy:
        """*policy* itself, a policy file, or (None) the app's own policy."""
        if isinstance(policy, RetentionPolicy):
            return policy
        if policy is not None:
            return cls.from_file(policy, **cls.celery_fallbacks(app))
        return cls.from_app(app)

    @staticmethod
    def celery_fallbacks(app: Any) -> dict[str, Any]:
        failure = app.conf.get("result_failure_expires")
        return {
            "result_expires": expiry_seconds(app.conf.result_expires),
            "failure_expires": expiry_seconds(failure, "result_failure_expires"),
            "failure_expires_set": failure is not None,
        }


def _toml_forever(data: Any) -> Any:
    """TOML has no null: ``expires = "forever"`` (or "never") means keep forever."""
    if isinstance(data, dict):
        return {
            k: (
                None
                if k in ("expires", "default") and str(v).lower() in ("forever", "never")
                else _toml_forever(v)
            )
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_toml_forever(v) for v in data]
    return data


def describe(policy: RetentionPolicy) -> Iterable[str]:
    """One line per rule, then the fallbacks."""
    for rule in policy.rules:
        yield rule.describe()
    if policy.failure_default_set:
        life = policy.failure_default
        yield f"other failures: {'forever' if life is None else format_duration(life)}"
    life = policy.default
    yield f"everything else: {'forever' if life is None else format_duration(life)}"
