"""Routing rules as data: typed, validated when saved, evaluated with an explanation.

A rule set is JSON (docs/rules.md has the language with examples). A condition is one of

- a test of one attribute: `{"field": K, OP: VALUE}` with OP one of `equals`, `in`, `regex`
  (with `ignore_case`), `lt`, `gt`, `exists`;
- a negation `{"not": CONDITION}`, or a combination `{"all": [...]}` / `{"any": [...]}`
  (nestable; `all` of nothing holds, `any` of nothing does not).

Semantics, the same everywhere:

- K is a keyword of ROUTING_KEYWORDS or a derived attribute (SeriesClass, SeriesInstances,
  ExamSeriesCount); anything else is refused at save time.
- A multi-valued attribute (ImageType, ScanningSequence...) satisfies equals, in, regex, lt and gt
  when ANY of its values does: `{"field": "ImageType", "equals": "DERIVED"}` holds for
  DERIVED\\SECONDARY\\MPR.
- Numbers compare as numbers: where both sides read as numbers (an attribute's text "2.5"
  included) equals and in compare them numerically; lt and gt need numbers on both sides (a value
  that is not a number does not satisfy them). Text compares exactly (case-sensitive) for equals
  and in.
- regex uses Python's `re.search` (anchor with `^...$` to match a whole value), compiled when the
  rule set is saved; `ignore_case` makes it case-insensitive. Patterns are at most
  MAX_PATTERN_CHARS long, may not nest repetitions ((a+)+) or repeat alternatives ((a|ab)*),
  nor hold more than
  MAX_UNBOUNDED_REPEATS unbounded ones (Python's re backtracks), and values are cut at
  MAX_MATCH_CHARS when matched.
- A missing attribute (absent, or present but empty) makes every operator false except `exists`
  (`exists: true` is false, `exists: false` is true) — and so `not` of a test on it is true.

Rules are tried in order; the first whose condition holds decides (its action). No rule holding:
nothing is decided for the series (route_exam's action "none": not processed).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from voxelpipe.analyses import CATALOGUE
from voxelpipe.analyses.catalogue import merged_parameters
from voxelpipe.routing.classify import SeriesClass
from voxelpipe.routing.keywords import RULE_FIELDS, TagValue, as_list, safe_keywords

__all__ = [
    "DEFAULT_RULE_SET",
    "MAX_PATTERN_CHARS",
    "Condition",
    "Outcome",
    "RoutingAction",
    "RoutingRule",
    "RuleSet",
]

MAX_PATTERN_CHARS: Final = 200
MAX_RULES: Final = 100
MAX_DEPTH: Final = 8  # nesting of all/any/not
_NAME: Final = r"^[a-z0-9][a-z0-9-]{0,62}$"
_MODEL_ANALYSIS: Final = re.compile(r"model:[a-z0-9][a-z0-9-]{0,62}")


def _scalar(value: Any) -> Any:
    """A text or a number (never a boolean, a list or an object)."""
    if value is None or isinstance(value, str) or _is_number(value):
        return value
    raise ValueError(f"must be a text or a number, not {type(value).__name__}")


def _bound(value: Any) -> Any:
    if value is None or _is_number(value):
        return value
    raise ValueError(f"must be a number, not {type(value).__name__}")


def _is_number(value: Any) -> bool:
    """A finite int or float (not a boolean: JSON's true is no number)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# Checked by hand (not as a union), so that an error names the field, not the union's members.
Scalar = Annotated[str | int | float | None, BeforeValidator(_scalar)]
Bound = Annotated[int | float | None, BeforeValidator(_bound)]
_OPERATORS: Final = ("equals", "in", "regex", "lt", "gt", "exists")
_COMBINATORS: Final = ("not", "all", "any")


def _allowed_fields() -> str:
    return ", ".join(sorted(RULE_FIELDS))


class Condition(BaseModel):
    """One condition: exactly one of the operators (with `field`) or of not/all/any (without)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: StrictStr | None = None
    equals: Scalar = None
    in_: Annotated[list[Scalar] | None, Field(alias="in", min_length=1, max_length=100)] = None
    regex: Annotated[StrictStr | None, Field(min_length=1, max_length=MAX_PATTERN_CHARS)] = None
    ignore_case: StrictBool | None = None  # regex only
    lt: Bound = None
    gt: Bound = None
    exists: StrictBool | None = None
    not_: Annotated[Condition | None, Field(alias="not")] = None
    all: Annotated[list[Condition] | None, Field(max_length=50)] = None
    any: Annotated[list[Condition] | None, Field(max_length=50)] = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, field: str | None) -> str | None:
        if field is not None and field not in RULE_FIELDS:
            raise ValueError(f"unknown attribute {field!r}; a rule may name: {_allowed_fields()}")
        return field

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from error
            slow = _slow_pattern(pattern)
            if slow:
                raise ValueError(f"a pattern that can take very long to match: {slow}")
        return pattern

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [name for name in (*_OPERATORS, *_COMBINATORS) if getattr(self, _attr(name)) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a condition has exactly one of {', '.join((*_OPERATORS, *_COMBINATORS))}; "
                f"this one has {', '.join(given) or 'none'}"
            )
        operator = given[0]
        if operator in _OPERATORS and self.field is None:
            raise ValueError(f"{operator} needs a field: the attribute it tests")
        if operator in _COMBINATORS and self.field is not None:
            raise ValueError(f"{operator} combines conditions and takes no field")
        if self.ignore_case is not None and operator != "regex":
            raise ValueError("ignore_case applies to regex only")
        if operator == "in" and any(v is None for v in self.in_ or []):
            raise ValueError("in lists texts or numbers")
        if self.field == "SeriesClass" and operator in ("equals", "in"):
            values = [self.equals] if operator == "equals" else list(self.in_ or [])
            unknown = [v for v in values if v not in SeriesClass.__members__.values()]
            if unknown:
                raise ValueError(
                    f"SeriesClass is one of {', '.join(SeriesClass)}; not {', '.join(map(str, unknown))}"
                )
        if self.depth() > MAX_DEPTH:
            raise ValueError(f"conditions nest at most {MAX_DEPTH} deep")
        return self

    @property
    def operator(self) -> str:
        return next(name for name in (*_OPERATORS, *_COMBINATORS) if getattr(self, _attr(name)) is not None)

    def depth(self) -> int:
        children = self.children()
        return 1 + max((child.depth() for child in children), default=0)

    def children(self) -> list[Condition]:
        if self.not_ is not None:
            return [self.not_]
        return list(self.all or self.any or [])

    def evaluate(self, tags: Mapping[str, TagValue]) -> Outcome:
        """Whether the condition holds for these tags, with the words that explain it."""
        operator = self.operator
        if operator == "not":
            assert self.not_ is not None
            negated = self.not_.evaluate(tags)
            return Outcome(not negated.holds, f"not ({negated.text}) -> {_yes(not negated.holds)}")
        if operator in ("all", "any"):
            outcomes = [child.evaluate(tags) for child in self.children()]
            held = [o.holds for o in outcomes]
            holds = all(held) if operator == "all" else any(held)
            parts = "; ".join(o.text for o in outcomes) or "nothing"
            return Outcome(holds, f"{operator}({parts}) -> {_yes(holds)}", [o.text for o in outcomes])
        assert self.field is not None
        values = as_list(tags.get(self.field))
        holds = self._test(values)
        shown = _shown(self.field, values)
        # A removed attribute's operand is withheld too: "equals X -> true" would quote its value.
        safe = self.field in safe_keywords() or self.operator == "exists"
        test = self._describe() if safe else f"{self.operator} <withheld>"
        return Outcome(holds, f"{self.field} {test} -> {_yes(holds)}{shown}")

    def _test(self, values: list[Any]) -> bool:
        operator = self.operator
        if operator == "exists":
            return bool(values) == self.exists
        if not values:
            return False
        if operator == "equals":
            return any(_same(value, self.equals) for value in values)
        if operator == "in":
            return any(_same(value, wanted) for value in values for wanted in self.in_ or [])
        if operator == "regex":
            assert self.regex is not None
            pattern = re.compile(self.regex, re.IGNORECASE if self.ignore_case else 0)
            return any(pattern.search(str(value)[:MAX_MATCH_CHARS]) for value in values)
        bound = self.lt if operator == "lt" else self.gt
        assert bound is not None
        numbers = [n for n in map(_as_number, values) if n is not None]
        return any(n < bound if operator == "lt" else n > bound for n in numbers)

    def _describe(self) -> str:
        operator = self.operator
        if operator == "in":
            return "in [" + ", ".join(map(str, self.in_ or [])) + "]"
        if operator == "regex":
            return f"regex /{self.regex}/" + ("i" if self.ignore_case else "")
        if operator == "exists":
            return "exists" if self.exists else "is missing"
        if operator == "lt":
            return f"< {self.lt}"
        if operator == "gt":
            return f"> {self.gt}"
        return f"equals {self.equals}"


# Python's re backtracks: a repetition inside a repetition ((a+)+), or alternatives inside one
# ((a|ab)*), can take exponential time, and
# many unbounded ones in a row (.*.*.*.*) a high power of the value's length. Ingest evaluates the
# tenant's patterns, so those are refused when the rule set is saved, and values are cut at
# MAX_MATCH_CHARS when matched (DICOM's LO, the longest text routed on, is 64 characters).
MAX_UNBOUNDED_REPEATS: Final = 3
MAX_MATCH_CHARS: Final = 128
_REPEATS: Final = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})
_LONG_REPEAT: Final = 16
_sre_parser: Any = importlib.import_module("re._parser")  # the parser re.compile uses (no stubs)


def _slow_pattern(pattern: str) -> str | None:
    """Why a (compilable) pattern is refused as too slow, or None."""
    unbounded = 0

    def walk(items: Any, repeated: bool) -> str | None:
        nonlocal unbounded
        for op, value in items:
            name = str(op)
            if name in _REPEATS:
                _, most, sub = value
                repeats = most is _sre_parser.MAXREPEAT or most > 1
                # {0,1000} backtracks as * does on values of MAX_MATCH_CHARS
                unbounded += most is _sre_parser.MAXREPEAT or most > _LONG_REPEAT
                if repeats and repeated:
                    return "a repetition inside a repetition, as in (a+)+"
                found = walk(sub, repeated or repeats)
            elif name == "SUBPATTERN":
                found = walk(value[3], repeated)
            elif name == "BRANCH" and repeated:
                # Overlapping alternatives under a repetition ((a|a)*b) are exponential too.
                return "alternatives inside a repetition, as in (a|ab)*: use a character class"
            elif name == "BRANCH":
                found = next((f for branch in value[1] if (f := walk(branch, repeated))), None)
            elif name in ("ASSERT", "ASSERT_NOT"):
                found = walk(value[1], repeated)
            elif name == "ATOMIC_GROUP":
                found = walk(value, repeated)
            elif name == "GROUPREF_EXISTS":
                found = walk(value[1], repeated) or (walk(value[2], repeated) if value[2] else None)
            else:
                found = None
            if found:
                return found
        return None

    found = walk(_sre_parser.parse(pattern), False)
    if found is None and unbounded > MAX_UNBOUNDED_REPEATS:
        found = f"more than {MAX_UNBOUNDED_REPEATS} unbounded repetitions (*, +, {{n,}}, {{n,m}} past m=16)"
    return found


def _attr(name: str) -> str:
    return {"in": "in_", "not": "not_"}.get(name, name)


def _yes(holds: bool) -> str:
    return "true" if holds else "false"


def _shown(field: str, values: list[Any]) -> str:
    """What an explanation says of the attribute's value: the value of a safe one, that a removed
    one is withheld, or that it is missing."""
    if not values:
        return " (missing)"
    if field not in safe_keywords():
        return ""  # the Basic Profile removes it: its value never appears
    return " (is " + "\\".join(str(v) for v in values) + ")"


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _same(value: Any, wanted: Any) -> bool:
    """Equality as the rules mean it: numerically where both are numbers, else as exact text."""
    number, wanted_number = _as_number(value), _as_number(wanted)
    if number is not None and wanted_number is not None:
        return number == wanted_number
    return str(value).strip() == str(wanted)


@dataclass(frozen=True)
class Outcome:
    holds: bool
    text: str
    # The parts of a top-level all/any (the explanation lists them one after the other).
    parts: list[str] | None = None


class RoutingAction(BaseModel):
    """What a rule does with the series it matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["process", "discard"]
    # The analyses to run; None: the ones the study asked for (or the tenant's defaults).
    analyses: Annotated[list[StrictStr] | None, Field(min_length=1, max_length=20)] = None
    parameters: dict[str, dict[str, Any]] | None = None  # per analysis: {name: {parameter: value}}
    priority: Literal["high", "normal"] | None = None
    destinations: Annotated[
        list[Annotated[StrictStr, Field(min_length=1, max_length=64)]], Field(max_length=20)
    ] = []

    @field_validator("analyses")
    @classmethod
    def _known_analyses(cls, analyses: list[str] | None) -> list[str] | None:
        for name in analyses or []:
            if name not in CATALOGUE and not _MODEL_ANALYSIS.fullmatch(name):
                raise ValueError(
                    f"unknown analysis {name!r}: one of {', '.join(sorted(CATALOGUE))}, or model:NAME"
                )
        if analyses is not None and len(set(analyses)) != len(analyses):
            raise ValueError("an analysis is named twice")
        return analyses

    @model_validator(mode="after")
    def _parameters_of_chosen(self) -> RoutingAction:
        chosen = self.analyses or self.parameters or self.priority or self.destinations
        if self.kind == "discard" and chosen:
            raise ValueError("a discard action takes no analyses, parameters, priority or destinations")
        if self.parameters and self.analyses is not None:
            extra = sorted(set(self.parameters) - set(self.analyses))
            if extra:
                raise ValueError(f"parameters for analyses the action does not run: {', '.join(extra)}")
        for name, given in (self.parameters or {}).items():
            if name in CATALOGUE:
                # The catalogue's analyses name their parameters; a model's are checked when it runs.
                merged_parameters(name, CATALOGUE[name].parameters, given)
            elif not _MODEL_ANALYSIS.fullmatch(name):
                raise ValueError(f"parameters for an unknown analysis {name!r}")
        return self


class RoutingRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[StrictStr, Field(pattern=_NAME)]
    description: Annotated[StrictStr, Field(max_length=500)] = ""
    condition: Condition
    action: RoutingAction


class RuleSet(BaseModel):
    """A tenant's routing: rules in order (the first that matches decides), and the quiet period
    after which a network transfer that has ended counts as complete."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: Annotated[list[RoutingRule], Field(max_length=MAX_RULES)]
    quiet_period_seconds: Annotated[StrictInt, Field(ge=0, le=3600)] = 30
    description: Annotated[StrictStr, Field(max_length=1000)] = ""

    def as_json(self) -> dict[str, Any]:
        """The rule set as its JSON form (operators by their names: `in`, `not`), as stored."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RoutingRule]) -> list[RoutingRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}: names are unique in a rule set")
            seen.add(rule.name)
        return rules


def _condition(data: dict[str, Any]) -> Condition:
    return Condition.model_validate(data)


DEFAULT_RULE_SET: Final = RuleSet(
    description="voxelpipe's default: a 3D T1 gets the default analyses; localizers and derived "
    "series are set aside; an exam of one series is processed as it always was",
    rules=[
        # First: an exam of one series was chosen by whoever sent it (a one-series upload, as
        # before exams): it is processed, and its own checks say whether it can be.
        RoutingRule(
            name="only-series",
            description="An exam of one series is processed, whatever it is",
            condition=_condition({"field": "ExamSeriesCount", "equals": 1}),
            action=RoutingAction(kind="process"),
        ),
        RoutingRule(
            name="localizers-and-derived",
            description="Localizers and derived (reformatted, computed) series are not processed",
            condition=_condition({"field": "SeriesClass", "in": ["LOCALIZER", "DERIVED"]}),
            action=RoutingAction(kind="discard"),
        ),
        RoutingRule(
            name="3d-t1",
            description="A 3D T1-weighted series gets the analyses the study asked for",
            condition=_condition(
                {
                    "all": [
                        {"field": "SeriesClass", "equals": "T1"},
                        {"field": "MRAcquisitionType", "equals": "3D"},
                    ]
                }
            ),
            action=RoutingAction(kind="process"),
        ),
    ],
)
