"""A trigger's payload filter: rules over the payload and headers, compiled once at load."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PrivateAttr, field_validator, model_validator

from hookrun.config.model.base import Frozen, NonEmptyStr, check_regex
from hookrun.config.templating import PayloadPathError, lookup_path, parse_path

#: A compiled rule: (request headers, parsed payload) -> whether it matches.
Test = Callable[[Mapping[str, str], Any], bool]

_COMBINATORS = ("all", "any", "not")
_OPERATORS = ("equals", "in", "matches", "exists")
_ABSENT = object()


def _list_means_all(value: Any) -> Any:
    return {"all": value} if isinstance(value, list) else value


class FilterRule(Frozen):
    """One rule: a ``path`` with one operator, or ``all``/``any`` of rules, or ``not`` a rule."""

    path: NonEmptyStr | None = None
    equals: Any = None
    in_: tuple[Any, ...] | None = Field(default=None, alias="in", min_length=1)
    matches: str | None = None
    exists: bool | None = None
    all_: tuple[FilterRule, ...] | None = Field(default=None, alias="all", min_length=1)
    any_: tuple[FilterRule, ...] | None = Field(default=None, alias="any", min_length=1)
    not_: Annotated[FilterRule | None, BeforeValidator(_list_means_all)] = Field(
        default=None, alias="not"
    )

    _test: Test = PrivateAttr()
    _reads_payload: bool = PrivateAttr(False)

    @field_validator("path")
    @classmethod
    def _known_root(cls, path: str | None) -> str | None:
        if path is None:
            return None
        root, dot, rest = path.partition(".")
        if not dot or not rest or root not in ("payload", "headers"):
            raise ValueError("must be 'payload.<path>' or 'headers.<name>'")
        if root == "payload":
            parse_path(rest)  # ValueError names the malformed path
        return path

    @field_validator("matches")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        return check_regex(pattern)

    @model_validator(mode="after")
    def _one_shape(self) -> FilterRule:
        fields = type(self).model_fields
        keys = {fields[name].alias or name for name in self.model_fields_set}
        kinds = keys & {"path", *_COMBINATORS}
        if len(kinds) != 1:
            raise ValueError("give exactly one of 'path', 'all', 'any' or 'not'")
        operators = keys & set(_OPERATORS)
        if "path" in kinds:
            if len(operators) != 1:
                raise ValueError("give 'path' exactly one of 'equals', 'in', 'matches' or 'exists'")
            if self.exists is None and "exists" in operators:
                raise ValueError("exists: must be true or false")
            if self.path is not None and self.path.startswith("headers."):
                values = (self.equals,) if "equals" in operators else (self.in_ or ())
                if not all(isinstance(v, str) for v in values):
                    raise ValueError("a header's value is a string: quote the values to compare")
        elif operators:
            raise ValueError(f"{sorted(operators)[0]!r} belongs to a rule with a 'path'")
        return self

    def _post_init(self) -> None:
        self._test, self._reads_payload = _compile(self)

    def describe(self) -> str:
        """A short text of the rule for the trigger log."""
        if self.path is not None:
            if self.exists is not None:
                return f"{self.path} exists: {str(self.exists).lower()}"
            if self.matches is not None:
                return f"{self.path} matches {self.matches!r}"
            if self.in_ is not None:
                return f"{self.path} in {list(self.in_)!r}"[:200]
            return f"{self.path} equals {self.equals!r}"[:200]
        if self.not_ is not None:
            return f"not ({self.not_.describe()})"
        rules = self.all_ or self.any_ or ()
        return f"{'all' if self.all_ is not None else 'any'} of {len(rules)} rules"


def _same(value: Any, expected: Any) -> bool:
    # JSON equality: true is not 1, but 1 is 1.0.
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return bool(value == expected)


def _compile(rule: FilterRule) -> tuple[Test, bool]:
    if rule.all_ is not None:
        tests = tuple(r._test for r in rule.all_)
        return (lambda h, p: all(t(h, p) for t in tests)), any(r._reads_payload for r in rule.all_)
    if rule.any_ is not None:
        tests = tuple(r._test for r in rule.any_)
        return (lambda h, p: any(t(h, p) for t in tests)), any(r._reads_payload for r in rule.any_)
    if rule.not_ is not None:
        inner = rule.not_._test
        return (lambda h, p: not inner(h, p)), rule.not_._reads_payload
    if rule.path is None:  # no shape at all: the after-validator refuses the rule
        return (lambda h, p: False), False
    root, _, rest = rule.path.partition(".")
    read = _header_reader(rest) if root == "headers" else _payload_reader(rest)
    if rule.exists is not None:
        wanted = rule.exists
        return (lambda h, p: (read(h, p) is not _ABSENT) is wanted), root == "payload"
    if rule.matches is not None:
        search = re.compile(rule.matches).search

        def matches(h: Mapping[str, str], p: Any) -> bool:
            value = read(h, p)
            return isinstance(value, str) and search(value) is not None

        return matches, root == "payload"
    options = rule.in_ if rule.in_ is not None else (rule.equals,)
    return (lambda h, p: _in(read(h, p), options)), root == "payload"


def _in(value: Any, options: tuple[Any, ...]) -> bool:
    return value is not _ABSENT and any(_same(value, option) for option in options)


def _header_reader(name: str) -> Callable[[Mapping[str, str], Any], Any]:
    lowered = name.lower()
    return lambda h, p: h.get(lowered, _ABSENT)


def _payload_reader(path: str) -> Callable[[Mapping[str, str], Any], Any]:
    segments = parse_path(path)

    def read(h: Mapping[str, str], payload: Any) -> Any:
        try:
            return lookup_path(payload, segments, path)
        except PayloadPathError:
            return _ABSENT

    return read


def filter_rules(value: Any) -> Any:
    """A trigger's ``filter`` as a list: one rule alone is a list of one."""
    return [value] if isinstance(value, dict) else value
