"""The routing tree: matching, inherited options, keys and config validation, ported from
Alertmanager's ``dispatch/route_test.go``, ``config/config_test.go`` and the routing
behaviours its documentation describes."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from monitor.model import Labels
from notifiers.route import RootRouteConfig, Route, RouteConfig, group_key, labels_string

# dispatch/route_test.go's tree (TestRouteMatch), in the older match/match_re spelling.
MATCH_TREE = """
receiver: 'notify-def'
routes:
- match:
    owner: 'team-A'
  receiver: 'notify-A'
  routes:
  - match:
      env: 'testing'
    receiver: 'notify-testing'
    group_by: [...]
  - match:
      env: "production"
    receiver: 'notify-productionA'
    group_wait: 1m
    continue: true
  - match_re:
      env: "produ.*"
      job: ".*"
    receiver: 'notify-productionB'
    group_wait: 30s
    group_interval: 5m
    repeat_interval: 1h
    group_by: ['job']
- match_re:
    owner: 'team-(B|C)'
  group_by: ['foo', 'bar']
  group_wait: 2m
  receiver: 'notify-BC'
- match:
    group_by: 'role'
  group_by: ['role']
  routes:
  - match:
      env: 'testing'
    receiver: 'notify-testing'
    routes:
    - match:
        wait: 'long'
      group_wait: 2m
"""

# The same tree in the matchers spelling (TestRouteMatchers).
MATCHERS_TREE = """
receiver: 'notify-def'
routes:
- matchers: ['{owner="team-A"}', '{level!="critical"}']
  receiver: 'notify-A'
  routes:
  - matchers: ['{env="testing"}', '{baz!~".*quux"}']
    receiver: 'notify-testing'
    group_by: [...]
  - matchers: ['{env="production"}']
    receiver: 'notify-productionA'
    group_wait: 1m
    continue: true
  - matchers: [ env=~"produ.*", job=~".*"]
    receiver: 'notify-productionB'
    group_wait: 30s
    group_interval: 5m
    repeat_interval: 1h
    group_by: ['job']
- matchers: [owner=~"team-(B|C)"]
  group_by: ['foo', 'bar']
  group_wait: 2m
  receiver: 'notify-BC'
- matchers: [group_by="role"]
  group_by: ['role']
  routes:
  - matchers: ['{env="testing"}']
    receiver: 'notify-testing'
    routes:
    - matchers: [wait="long"]
      group_wait: 2m
"""


def tree(text: str) -> Route:
    return Route.from_config(RootRouteConfig.model_validate(yaml.safe_load(text)))


def opts(
    receiver: str,
    group_by: tuple[str, ...] = (),
    group_by_all: bool = False,
    group_wait: float = 30.0,
    group_interval: float = 300.0,
    repeat_interval: float = 14400.0,
) -> tuple[Any, ...]:
    return (
        receiver,
        frozenset(group_by),
        group_by_all,
        group_wait,
        group_interval,
        repeat_interval,
    )


def opts_of(route: Route) -> tuple[Any, ...]:
    return (
        route.receiver,
        route.group_by,
        route.group_by_all,
        route.group_wait,
        route.group_interval,
        route.repeat_interval,
    )


MATCH_CASES = [
    pytest.param(
        {"owner": "team-A"},
        [opts("notify-A")],
        ['{}/{owner="team-A"}'],
        ['{}/{level!="critical",owner="team-A"}'],
        id="a route with no matching child is itself the match",
    ),
    pytest.param(
        {"owner": "team-A", "env": "unset"},
        [opts("notify-A")],
        ['{}/{owner="team-A"}'],
        ['{}/{level!="critical",owner="team-A"}'],
        id="an unmatched extra label leaves the parent as the match",
    ),
    pytest.param(
        {"owner": "team-C"},
        [opts("notify-BC", ("foo", "bar"), group_wait=120.0)],
        ['{}/{owner=~"^(?:team-(B|C))$"}'],
        ['{}/{owner=~"team-(B|C)"}'],
        id="a regex matcher; match_re shows anchored in the key as in Alertmanager",
    ),
    pytest.param(
        {"owner": "team-A", "env": "testing"},
        [opts("notify-testing", group_by_all=True)],
        ['{}/{owner="team-A"}/{env="testing"}'],
        ['{}/{level!="critical",owner="team-A"}/{baz!~".*quux",env="testing"}'],
        id="group_by ... groups by all labels",
    ),
    pytest.param(
        {"owner": "team-A", "env": "production"},
        [
            opts("notify-productionA", group_wait=60.0),
            opts("notify-productionB", ("job",), group_wait=30.0, repeat_interval=3600.0),
        ],
        [
            '{}/{owner="team-A"}/{env="production"}',
            '{}/{owner="team-A"}/{env=~"^(?:produ.*)$",job=~"^(?:.*)$"}',
        ],
        [
            '{}/{level!="critical",owner="team-A"}/{env="production"}',
            '{}/{level!="critical",owner="team-A"}/{env=~"produ.*",job=~".*"}',
        ],
        id="continue lets the next sibling match too; a missing job label matches .*",
    ),
    pytest.param(
        {"group_by": "role"},
        [opts("notify-def", ("role",))],
        ['{}/{group_by="role"}'],
        ['{}/{group_by="role"}'],
        id="a child without receiver inherits the root's",
    ),
    pytest.param(
        {"env": "testing", "group_by": "role"},
        [opts("notify-testing", ("role",))],
        ['{}/{group_by="role"}/{env="testing"}'],
        ['{}/{group_by="role"}/{env="testing"}'],
        id="group_by is inherited from the parent",
    ),
    pytest.param(
        {"env": "testing", "group_by": "role", "wait": "long"},
        [opts("notify-testing", ("role",), group_wait=120.0)],
        ['{}/{group_by="role"}/{env="testing"}/{wait="long"}'],
        ['{}/{group_by="role"}/{env="testing"}/{wait="long"}'],
        id="a grandchild inherits receiver and group_by and sets its own group_wait",
    ),
    pytest.param(
        {"alertname": "Other"},
        [opts("notify-def")],
        ["{}"],
        ["{}"],
        id="an alert no child takes goes to the root with the defaults",
    ),
]


@pytest.mark.parametrize(("labels", "expected", "keys", "_matcher_keys"), MATCH_CASES)
def test_route_match_with_match_and_match_re(
    labels: dict[str, str], expected: list[Any], keys: list[str], _matcher_keys: list[str]
) -> None:
    found = tree(MATCH_TREE).match(Labels(labels))
    assert [opts_of(r) for r in found] == expected
    assert [r.key() for r in found] == keys


@pytest.mark.parametrize(("labels", "expected", "_match_keys", "keys"), MATCH_CASES)
def test_route_match_with_matchers(
    labels: dict[str, str], expected: list[Any], _match_keys: list[str], keys: list[str]
) -> None:
    found = tree(MATCHERS_TREE).match(Labels(labels))
    assert [opts_of(r) for r in found] == expected
    assert [r.key() for r in found] == keys


ROUTING_TREE = """
receiver: default
group_by: [alertname]
group_wait: 10s
routes:
- match_re: {service: "foo"}
  receiver: foo-team
- matchers: ['team=""']
  receiver: no-team
  continue: true
- matchers: ['severity="critical"']
  receiver: pager
  group_by: []
  repeat_interval: 1h
  mute_time_intervals: [offhours]
  routes:
  - matchers: ['env="prod"']
    receiver: prod-pager
  - matchers: ['env=~"prod|staging"']
    receiver: never-reached
- matchers: ['severity=~"warn.*"']
  receiver: first
  continue: true
- matchers: ['severity=~"warning|info"']
  receiver: second
- matchers: ['severity="warning"']
  receiver: third
"""


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        pytest.param({"service": "foo", "team": "x"}, ["foo-team"], id="regex matches whole value"),
        pytest.param(
            {"service": "foobar", "team": "x"},
            ["default"],
            id="match_re service foo does not match foobar: regexes are anchored",
        ),
        pytest.param(
            {"service": "xfoo", "team": "x"},
            ["default"],
            id="an anchored regex does not match a suffix either",
        ),
        pytest.param(
            {"severity": "critical"},
            ["no-team", "pager"],
            id="a missing label equals the empty string and continue goes on",
        ),
        pytest.param(
            {"severity": "critical", "team": "db", "env": "prod"},
            ["prod-pager"],
            id="the first matching child wins without continue",
        ),
        pytest.param(
            {"severity": "critical", "team": "db", "env": "staging"},
            ["never-reached"],
            id="a later child matches when earlier ones do not",
        ),
        pytest.param(
            {"severity": "warning", "team": "db"},
            ["first", "second"],
            id="continue on the first sibling, then stop at the next match",
        ),
        pytest.param(
            {"severity": "info", "team": "db"}, ["second"], id="only the second sibling matches"
        ),
    ],
)
def test_routing_behaviours(labels: dict[str, str], receivers: list[str]) -> None:
    assert [r.receiver for r in tree(ROUTING_TREE).match(Labels(labels))] == receivers


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            (2,),
            {
                "receiver": "pager",
                "group_by": frozenset({"alertname"}),
                "group_wait": 10.0,
                "repeat_interval": 3600.0,
                "mute_time_intervals": ("offhours",),
            },
            id="an empty group_by inherits the parent's, as Alertmanager's NewRoute does",
        ),
        pytest.param(
            (2, 0),
            {
                "receiver": "prod-pager",
                "group_by": frozenset({"alertname"}),
                "group_wait": 10.0,
                "group_interval": 300.0,
                "repeat_interval": 3600.0,
                "mute_time_intervals": (),
            },
            id="timings are inherited but mute_time_intervals are not",
        ),
        pytest.param(
            (),
            {"receiver": "default", "group_interval": 300.0, "repeat_interval": 14400.0},
            id="the root takes Alertmanager's defaults for what it does not set",
        ),
    ],
)
def test_inherited_options(path: tuple[int, ...], expected: dict[str, Any]) -> None:
    route = tree(ROUTING_TREE)
    for i in path:
        route = route.routes[i]
    assert {name: getattr(route, name) for name in expected} == expected


def test_group_by_all_is_inherited_until_a_child_names_labels() -> None:
    """TestInheritParentGroupByAll."""
    root = Route(
        RouteConfig.model_validate(
            yaml.safe_load(
                """
routes:
- match: {env: parent}
  group_by: ['...']
  routes:
  - match: {env: child1}
  - match: {env: child2}
    group_by: ['foo']
"""
            )
        )
    )
    parent = root.routes[0]
    assert parent.group_by_all
    assert parent.routes[0].group_by_all
    assert not parent.routes[1].group_by_all
    assert parent.routes[1].group_by == frozenset({"foo"})


def test_walk_visits_depth_first() -> None:
    """TestRouteWalk."""
    assert [r.receiver for r in tree(MATCH_TREE).walk()] == [
        "notify-def",
        "notify-A",
        "notify-testing",
        "notify-productionA",
        "notify-productionB",
        "notify-BC",
        "notify-def",
        "notify-testing",
        "notify-testing",
    ]


def test_route_ids_add_the_position_among_siblings() -> None:
    """TestRouteID."""
    root = tree(
        """
receiver: default
routes:
- {continue: true, matchers: [foo=bar], receiver: test1, routes: [{matchers: [bar=baz]}]}
- {continue: true, matchers: [foo=bar], receiver: test1, routes: [{matchers: [bar=baz]}]}
- {continue: true, matchers: [foo=bar], receiver: test2, routes: [{matchers: [bar=baz]}]}
- continue: true
  matchers: [bar=baz]
  receiver: test3
  routes: [{matchers: [baz=qux]}, {matchers: [qux=corge]}]
- {continue: true, matchers: ['qux=~"[a-zA-Z0-9]+"']}
- {continue: true, matchers: ['corge!~"[0-9]+"']}
"""
    )
    assert [r.id() for r in root.walk()] == [
        "{}",
        '{}/{foo="bar"}/0',
        '{}/{foo="bar"}/0/{bar="baz"}/0',
        '{}/{foo="bar"}/1',
        '{}/{foo="bar"}/1/{bar="baz"}/0',
        '{}/{foo="bar"}/2',
        '{}/{foo="bar"}/2/{bar="baz"}/0',
        '{}/{bar="baz"}/3',
        '{}/{bar="baz"}/3/{baz="qux"}/0',
        '{}/{bar="baz"}/3/{qux="corge"}/1',
        '{}/{qux=~"[a-zA-Z0-9]+"}/4',
        '{}/{corge!~"[0-9]+"}/5',
    ]


def test_receivers_and_time_interval_names_cover_the_tree() -> None:
    root = tree(ROUTING_TREE)
    assert root.receivers() == {
        "default",
        "foo-team",
        "no-team",
        "pager",
        "prod-pager",
        "never-reached",
        "first",
        "second",
        "third",
    }
    assert root.time_interval_names() == {"offhours"}


@pytest.mark.parametrize(
    ("route_yaml", "labels", "group_labels", "key"),
    [
        pytest.param(
            "{receiver: r, group_by: [alertname, cluster]}",
            {"alertname": "Down", "cluster": "eu", "instance": "a:1"},
            {"alertname": "Down", "cluster": "eu"},
            '{}:{alertname="Down", cluster="eu"}',
            id="group labels are the labels named in group_by",
        ),
        pytest.param(
            "{receiver: r, group_by: [alertname, cluster]}",
            {"alertname": "Down"},
            {"alertname": "Down"},
            '{}:{alertname="Down"}',
            id="a group_by label the alert lacks is left out",
        ),
        pytest.param(
            "{receiver: r, group_by: ['...']}",
            {"alertname": "Down", "instance": "a:1"},
            {"alertname": "Down", "instance": "a:1"},
            '{}:{alertname="Down", instance="a:1"}',
            id="... groups by every label",
        ),
        pytest.param(
            "{receiver: r}",
            {"alertname": "Down"},
            {},
            "{}:{}",
            id="without group_by all alerts share one group",
        ),
        pytest.param(
            "{receiver: r, group_by: [msg]}",
            {"msg": 'say "hi"\n\\ now\x01'},
            {"msg": 'say "hi"\n\\ now\x01'},
            '{}:{msg="say \\"hi\\"\\n\\\\ now\\x01"}',
            id="label values are quoted as Go's strconv.Quote quotes them",
        ),
    ],
)
def test_group_labels_and_key(
    route_yaml: str, labels: dict[str, str], group_labels: dict[str, str], key: str
) -> None:
    route = tree(route_yaml)
    found = route.group_labels(Labels(labels))
    assert found == group_labels
    assert group_key(route, found) == key


def test_group_key_of_a_child_route() -> None:
    route = tree(ROUTING_TREE).match(Labels.of(severity="critical", team="db", env="prod"))[0]
    assert (
        group_key(route, Labels.of(alertname="Down"))
        == '{}/{severity="critical"}/{env="prod"}:{alertname="Down"}'
    )
    assert labels_string({"b": "2", "a": "1"}) == '{a="1", b="2"}'


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {"receiver": "r", "group_by": ["...", "job"]},
            "cannot have wildcard group_by (`...`) and other labels at the same time",
            id="... must stand alone",
        ),
        pytest.param(
            {"receiver": "r", "group_by": ["job", "job"]},
            'duplicated label "job" in group_by',
            id="a label twice in group_by",
        ),
        pytest.param(
            {"receiver": "r", "group_by": ["0job"]},
            'invalid label name "0job" in group_by list',
            id="an invalid label name in group_by",
        ),
        pytest.param(
            {"receiver": "r", "group_interval": "0s"},
            "group_interval cannot be zero",
            id="zero group_interval",
        ),
        pytest.param(
            {"receiver": "r", "repeat_interval": 0},
            "repeat_interval cannot be zero",
            id="zero repeat_interval",
        ),
        pytest.param(
            {"receiver": "r", "routes": [{"matchers": ['severity=~"(crit"']}]},
            "invalid regular expression '(crit'",
            id="a bad regex in a matcher line is a config error",
        ),
        pytest.param(
            {"receiver": "r", "routes": [{"matchers": ['severity="crit']}]},
            "unterminated quoted string",
            id="an unparsable matcher line is a config error",
        ),
        pytest.param(
            {"receiver": "r", "routes": [{"match_re": {"service": "foo("}}]},
            "invalid regular expression 'foo('",
            id="a bad match_re regex is a config error",
        ),
        pytest.param(
            {"receiver": "r", "routes": [{"match": {"bad-name": "x"}}]},
            'invalid label name "bad-name"',
            id="match keys must be label names",
        ),
        pytest.param(
            {"group_by": ["job"]},
            "root route must specify a default receiver",
            id="the root needs a receiver",
        ),
        pytest.param(
            {"receiver": "r", "matchers": ['a="b"']},
            "root route must not have any matchers",
            id="the root has no matchers",
        ),
        pytest.param(
            {"receiver": "r", "match": {"a": "b"}},
            "root route must not have any matchers",
            id="the root has no match either",
        ),
        pytest.param(
            {"receiver": "r", "mute_time_intervals": ["x"]},
            "root route must not have any mute time intervals",
            id="the root has no mute time intervals",
        ),
        pytest.param(
            {"receiver": "r", "active_time_intervals": ["x"]},
            "root route must not have any active time intervals",
            id="the root has no active time intervals",
        ),
        pytest.param(
            {"receiver": "r", "continue": True},
            "cannot have continue in root route",
            id="the root has no continue",
        ),
        pytest.param(
            {"receiver": "r", "routes": [{"recevier": "x"}]},
            "Extra inputs are not permitted",
            id="unknown keys are refused at any depth",
        ),
    ],
)
def test_invalid_route_configs(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        RootRouteConfig.model_validate(config)
    assert message in str(info.value)


def test_error_locations_name_the_nested_field() -> None:
    with pytest.raises(ValidationError) as info:
        RootRouteConfig.model_validate(
            {"receiver": "r", "routes": [{"routes": [{"group_by": ["a", "a"]}]}]}
        )
    assert info.value.errors()[0]["loc"] == ("routes", 0, "routes", 0, "group_by")


def test_continue_is_spelt_continue_and_populated_by_name_too() -> None:
    by_alias = RouteConfig.model_validate({"continue": True})
    by_name = RouteConfig(continue_=True)
    assert by_alias.continue_ and by_name.continue_
    assert by_alias.model_dump(by_alias=True)["continue"] is True


def test_child_routes_may_have_matchers_continue_and_time_intervals() -> None:
    root = RootRouteConfig.model_validate(
        {
            "receiver": "r",
            "routes": [
                {
                    "matchers": ['a="b"'],
                    "continue": True,
                    "mute_time_intervals": ["m"],
                    "active_time_intervals": ["a"],
                }
            ],
        }
    )
    assert root.routes[0].continue_


def test_reference_errors_name_undefined_receivers_and_intervals() -> None:
    config = RootRouteConfig.model_validate(yaml.safe_load(ROUTING_TREE))
    errors = config.reference_errors(
        {"default", "foo-team", "no-team", "pager", "never-reached", "first", "second"},
        set(),
        "route",
    )
    assert errors == [
        ("route.routes.2.routes.0.receiver", 'undefined receiver "prod-pager" used in route'),
        (
            "route.routes.2.mute_time_intervals.0",
            'undefined time interval "offhours" used in route',
        ),
        ("route.routes.5.receiver", 'undefined receiver "third" used in route'),
    ]
