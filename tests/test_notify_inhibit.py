"""Inhibition rules: cases ported from Alertmanager's ``inhibit/inhibit_test.go`` and the
``inhibit_rule`` documentation, each with an id that reads as a sentence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from notifiers.base import fingerprint
from notifiers.inhibit import Inhibitor, InhibitRuleConfig


@dataclass(frozen=True)
class Alert:
    labels: dict[str, str]
    fingerprint: str = ""


def rule(**fields: object) -> InhibitRuleConfig:
    return InhibitRuleConfig.model_validate(fields)


# TestInhibitRuleHasEqual: one rule with no matchers (every alert is a source and a
# target), sources given, then whether the input is inhibited.
HAS_EQUAL = [
    pytest.param([], [], {"a": "b"}, False, id="no source alerts at all inhibit nothing"),
    pytest.param([{}], [], {"a": "b"}, True, id="without equal labels any firing source inhibits"),
    pytest.param(
        [{"a": "b", "c": "d"}, {"a": "b", "c": "f"}],
        ["a"],
        {"a": "b"},
        True,
        id="a source agreeing on the equal label inhibits",
    ),
    pytest.param(
        [{"a": "c", "c": "d"}, {"a": "c", "c": "f"}],
        ["a"],
        {"a": "b"},
        False,
        id="sources that differ on the equal label do not inhibit",
    ),
    pytest.param(
        [{"x": "1"}],
        ["cluster"],
        {"y": "2"},
        True,
        id="an equal label missing on both sides counts as equal",
    ),
    pytest.param(
        [{"x": "1", "cluster": ""}],
        ["cluster"],
        {"y": "2"},
        True,
        id="an empty equal label equals a missing one",
    ),
    pytest.param(
        [{"x": "1", "cluster": "eu"}],
        ["cluster"],
        {"y": "2"},
        False,
        id="an equal label present on one side only differs",
    ),
]


@pytest.mark.parametrize(("sources", "equal", "target", "inhibited"), HAS_EQUAL)
def test_has_equal(
    sources: list[dict[str, str]], equal: list[str], target: dict[str, str], inhibited: bool
) -> None:
    # A two-sided match is excluded only when the target also matches the (empty) source
    # side, which is always; so use a rule whose source side the target cannot match.
    inhibitor = Inhibitor([rule(source_matchers=['src="1"'], equal=equal)])
    inhibitor.update(Alert({**s, "src": "1"}) for s in sources)
    assert bool(inhibitor.inhibited_by(target)) is inhibited


def _rules_match_style() -> list[InhibitRuleConfig]:
    return [
        rule(source_match={"s1": "1"}, target_match={"t1": "1"}, equal=["e"]),
        rule(source_match={"s2": "1"}, target_match={"t2": "1"}, equal=["e"]),
    ]


def _rules_matchers_style() -> list[InhibitRuleConfig]:
    return [
        rule(source_matchers=['s1="1"'], target_matchers=['t1!="1"'], equal=["e"]),
        rule(source_matchers=['s2="1"'], target_matchers=['t2="1"'], equal=["e"]),
    ]


# Active source 1 matches rule 1's source side; source 2 matches rule 2's source *and*
# target sides.
SOURCE_1 = {"s1": "1", "t1": "2", "e": "1"}
SOURCE_2 = {"s2": "1", "t2": "1", "e": "1"}

RULE_MATCHES = [
    # TestInhibitRuleMatches (source_match/target_match spelling)
    pytest.param(_rules_match_style, {"t1": "1", "e": "1"}, True, id="match: target of rule 1"),
    pytest.param(_rules_match_style, {"t2": "1", "e": "1"}, True, id="match: target of rule 2"),
    pytest.param(
        _rules_match_style,
        {"t1": "1", "t3": "1", "e": "1"},
        True,
        id="match: target of rule 1 plus noise",
    ),
    pytest.param(
        _rules_match_style,
        {"t1": "1", "t2": "1", "e": "1"},
        True,
        id="match: target of rules 1 and 2",
    ),
    pytest.param(
        _rules_match_style, {"t1": "0", "e": "1"}, False, id="match: no target filter matches"
    ),
    pytest.param(
        _rules_match_style,
        {"s1": "1", "t1": "1", "e": "1"},
        True,
        id="match: two-sided target is inhibited by a source that is only a source",
    ),
    pytest.param(
        _rules_match_style,
        {"s2": "1", "t2": "1", "e": "1"},
        False,
        id="match: two-sided target is not inhibited by a two-sided source",
    ),
    pytest.param(
        _rules_match_style,
        {"t1": "1", "e": "0"},
        False,
        id="match: target whose equal label differs is not inhibited",
    ),
    # TestInhibitRuleMatchers (matchers spelling, rule 1's target side negated)
    pytest.param(
        _rules_matchers_style, {"t1": "1", "e": "1"}, False, id="matchers: t1!=1 excludes t1=1"
    ),
    pytest.param(
        _rules_matchers_style, {"t2": "1", "e": "1"}, True, id="matchers: target of rule 2"
    ),
    pytest.param(
        _rules_matchers_style,
        {"t1": "1", "t3": "1", "e": "1"},
        False,
        id="matchers: t1=1 plus noise is not a target of rule 1",
    ),
    pytest.param(
        _rules_matchers_style,
        {"t1": "1", "t2": "1", "e": "1"},
        True,
        id="matchers: target of rule 2 though not of rule 1",
    ),
    pytest.param(
        _rules_matchers_style,
        {"t1": "0", "e": "1"},
        True,
        id="matchers: t1=0 is a target of rule 1",
    ),
    pytest.param(
        _rules_matchers_style,
        {"s1": "1", "t1": "1", "e": "1"},
        False,
        id="matchers: s1=1,t1=1 is not a target of rule 1",
    ),
    pytest.param(
        _rules_matchers_style,
        {"s2": "1", "t2": "1", "e": "1"},
        True,
        id="matchers: two-sided for rule 2, inhibited by source 1 through rule 1",
    ),
    pytest.param(
        _rules_matchers_style,
        {"t1": "1", "e": "0"},
        False,
        id="matchers: equal label differs",
    ),
]


@pytest.mark.parametrize(("rules", "target", "inhibited"), RULE_MATCHES)
def test_rule_matches(
    rules: Callable[[], list[InhibitRuleConfig]], target: dict[str, str], inhibited: bool
) -> None:
    inhibitor = Inhibitor(rules())
    inhibitor.update([Alert(SOURCE_1), Alert(SOURCE_2)])
    assert inhibitor.mutes(target) is inhibited


def test_inhibited_by_names_the_sources_by_fingerprint() -> None:
    inhibitor = Inhibitor(_rules_matchers_style())
    inhibitor.update([Alert(SOURCE_1, "aaaa"), ("bbbb", SOURCE_2)])
    assert inhibitor.inhibited_by({"t1": "0", "e": "1"}) == ["aaaa"]
    assert inhibitor.inhibited_by({"t1": "0", "t2": "1", "e": "1"}) == ["aaaa", "bbbb"]
    assert inhibitor.inhibited_by({"e": "1"}) == ["aaaa"]  # t1 missing = "" != "1"
    assert inhibitor.inhibited_by({"t1": "1", "e": "1"}) == []


def test_an_empty_fingerprint_is_computed_from_the_labels() -> None:
    inhibitor = Inhibitor([rule(source_match={"s": "1"}, target_match={"t": "1"})])
    inhibitor.update([Alert({"s": "1"})])
    assert inhibitor.inhibited_by({"t": "1"}) == [fingerprint({"s": "1"})]


# TestInhibit: the source alert fires, then resolves (update without it).
def test_source_alert_lifecycle() -> None:
    inhibitor = Inhibitor([rule(source_match={"s": "1"}, target_match={"t": "1"}, equal=["e"])])
    one, two = {"t": "1", "e": "f"}, {"s": "1", "e": "f"}
    inhibitor.update([Alert(one)])
    assert not inhibitor.mutes(one), "the source has not fired yet"
    inhibitor.update([Alert(one), Alert(two)])
    assert inhibitor.mutes(one), "the firing source inhibits the target"
    assert not inhibitor.mutes(two), "the source itself is not a target"
    inhibitor.update([Alert(one)])
    assert not inhibitor.mutes(one), "a resolved source inhibits nothing"


DOCS = [
    pytest.param(
        {"severity": "warning", "alertname": "DiskFull", "cluster": "eu", "service": "db"},
        True,
        id="docs: a warning in the same cluster and service as a critical is muted",
    ),
    pytest.param(
        {"severity": "warning", "alertname": "DiskFull", "cluster": "us", "service": "db"},
        False,
        id="docs: a warning in another cluster is not muted",
    ),
    pytest.param(
        {"severity": "info", "alertname": "DiskFull", "cluster": "eu", "service": "db"},
        False,
        id="docs: an alert that is not a warning is not a target",
    ),
    pytest.param(
        {"severity": "warning", "alertname": "Down", "cluster": "eu", "service": "db"},
        False,
        id="docs: the same alertname is also required to be equal",
    ),
]


@pytest.mark.parametrize(("target", "inhibited"), DOCS)
def test_documented_example(target: dict[str, str], inhibited: bool) -> None:
    # The example of Alertmanager's configuration documentation.
    config = rule(
        source_matchers=["severity = critical"],
        target_matchers=["severity = warning"],
        equal=["alertname", "cluster", "service"],
    )
    inhibitor = Inhibitor([config])
    inhibitor.update(
        [Alert({"severity": "critical", "alertname": "DiskFull", "cluster": "eu", "service": "db"})]
    )
    assert inhibitor.mutes(target) is inhibited


REGEX = [
    pytest.param({"severity": "critical"}, True, id="regex: the whole value matches"),
    pytest.param({"severity": "critical-ish"}, False, id="regex: a prefix match is not enough"),
    pytest.param({"severity": "not-critical"}, False, id="regex: a suffix match is not enough"),
    pytest.param({"severity": "page"}, True, id="regex: an alternative matches whole"),
]


@pytest.mark.parametrize(("source", "inhibited"), REGEX)
def test_source_regex_is_anchored(source: dict[str, str], inhibited: bool) -> None:
    inhibitor = Inhibitor(
        [rule(source_match_re={"severity": "critical|page"}, target_matchers=['severity="warn"'])]
    )
    inhibitor.update([Alert(source)])
    assert inhibitor.mutes({"severity": "warn"}) is inhibited


def test_target_regex_is_anchored() -> None:
    inhibitor = Inhibitor(
        [rule(source_match={"a": "src"}, target_matchers=['instance=~"web-[0-9]+"'])]
    )
    inhibitor.update([Alert({"a": "src"})])
    assert inhibitor.mutes({"instance": "web-12"})
    assert not inhibitor.mutes({"instance": "web-12.example"})
    assert not inhibitor.mutes({"instance": "old-web-12"})


def test_missing_label_matches_empty_on_the_target_side() -> None:
    inhibitor = Inhibitor([rule(source_match={"a": "src"}, target_matchers=['team=""'])])
    inhibitor.update([Alert({"a": "src"})])
    assert inhibitor.mutes({"alertname": "X"})
    assert not inhibitor.mutes({"alertname": "X", "team": "db"})


def test_an_alert_matching_both_sides_does_not_inhibit_itself() -> None:
    inhibitor = Inhibitor([rule(source_matchers=['a="1"'], target_matchers=['b="1"'])])
    both = {"a": "1", "b": "1"}
    inhibitor.update([Alert(both)])
    assert inhibitor.inhibited_by(both) == []
    assert inhibitor.inhibited_by({"b": "1"}) == [fingerprint(both)]


def test_old_and_new_spellings_are_anded() -> None:
    config = rule(source_match={"a": "1"}, source_matchers=['b="2"'], target_match_re={"t": "x|y"})
    assert [str(m) for m in config.sources()] == ['a="1"', 'b="2"']
    assert [str(m) for m in config.targets()] == ['t=~"x|y"']
    inhibitor = Inhibitor([config])
    inhibitor.update([Alert({"a": "1"})])
    assert not inhibitor.mutes({"t": "x"}), "b=2 is required of the source too"
    inhibitor.update([Alert({"a": "1", "b": "2"})])
    assert inhibitor.mutes({"t": "x"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"source_matchers": ['a="open']}, "source_matchers.0", id="bad matcher line"),
        pytest.param({"target_matchers": ['a=~"("']}, "regular expression", id="bad regex line"),
        pytest.param({"source_match_re": {"a": "("}}, "regular expression", id="bad match_re"),
        pytest.param({"equal": ["not-a-name"]}, "invalid label name", id="bad equal name"),
        pytest.param({"target_match": {"1x": "y"}}, "invalid label name", id="bad match name"),
        pytest.param({"source_matcher": ["a=b"]}, "Extra inputs", id="misspelt key"),
    ],
)
def test_config_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        InhibitRuleConfig.model_validate(fields)
    text = str(info.value)
    assert message in text or message in str(info.value.errors()[0]["loc"])
