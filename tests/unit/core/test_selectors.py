"""Label and field selectors: parsing, canonical text, matching, and errors."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.core.selectors import (
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    object_fields,
    parse_field_selector,
    parse_label_selector,
    selector_from_label_selector_object,
    selector_from_set,
)

# --------------------------------------------------------------------------- label parsing


@pytest.mark.parametrize(
    ("text", "requirements"),
    [
        ("a=b", [("a", Operator.EQUALS, ("b",))]),
        ("a==b", [("a", Operator.DOUBLE_EQUALS, ("b",))]),
        ("a!=b", [("a", Operator.NOT_EQUALS, ("b",))]),
        ("a in (x,y)", [("a", Operator.IN, ("x", "y"))]),
        ("a notin (x,y)", [("a", Operator.NOT_IN, ("x", "y"))]),
        ("a", [("a", Operator.EXISTS, ())]),
        ("!a", [("a", Operator.DOES_NOT_EXIST, ())]),
        ("a>5", [("a", Operator.GREATER_THAN, ("5",))]),
        ("a<5", [("a", Operator.LESS_THAN, ("5",))]),
        ("a=", [("a", Operator.EQUALS, ("",))]),
        ("a in ()", [("a", Operator.IN, ("",))]),
        ("a in (x,)", [("a", Operator.IN, ("", "x"))]),
        ("a in (,x)", [("a", Operator.IN, ("", "x"))]),
        ("a in (x,,y)", [("a", Operator.IN, ("", "x", "y"))]),
        ("a in (y,x,y)", [("a", Operator.IN, ("x", "y"))]),
        ("in=notin", [("in", Operator.EQUALS, ("notin",))]),
        ("a in (in,notin)", [("a", Operator.IN, ("in", "notin"))]),
        ("app.kubernetes.io/name=web", [("app.kubernetes.io/name", Operator.EQUALS, ("web",))]),
        (
            "z=1,a=2,m",
            [
                ("a", Operator.EQUALS, ("2",)),
                ("m", Operator.EXISTS, ()),
                ("z", Operator.EQUALS, ("1",)),
            ],
        ),
    ],
)
def test_parse_label_selector(
    text: str, requirements: list[tuple[str, Operator, tuple[str, ...]]]
) -> None:
    selector = parse_label_selector(text)
    assert selector.requirements == tuple(Requirement(k, op, v) for k, op, v in requirements)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("   ", ""),
        ("a=b", "a=b"),
        ("a==b", "a==b"),
        ("  a = b ,  c in ( y , x ) , ! d ,e  ", "a=b,c in (x,y),!d,e"),
        ("\ta\t!=\tb\n", "a!=b"),
        ("tier notin (b,a),app", "app,tier notin (a,b)"),
        ("b<1,a>5", "a>5,b<1"),
        ("a in (x,)", "a in (,x)"),
        ("a=", "a="),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert parse_label_selector(str(selector)) == selector


def test_empty_selector() -> None:
    selector = parse_label_selector("")
    assert selector.empty
    assert selector == LabelSelector.everything()
    assert selector.matches({})
    assert selector.matches(None)
    assert selector.matches({"any": "thing"})
    assert not parse_label_selector("a").empty


# --------------------------------------------------------------------------- label matching


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("a=b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a==b", {"a": "b", "x": "y"}, True),
        ("a==b", {"a": "B"}, False),
        ("a!=b", {"a": "c"}, True),
        ("a!=b", {"a": "b"}, False),
        ("a!=b", {}, True),  # a missing label is not equal
        ("a in (x,y)", {"a": "y"}, True),
        ("a in (x,y)", {"a": "z"}, False),
        ("a in (x,y)", {}, False),
        ("a notin (x,y)", {"a": "z"}, True),
        ("a notin (x,y)", {"a": "x"}, False),
        ("a notin (x,y)", {}, True),  # a missing label is in no set
        ("a", {"a": ""}, True),
        ("a", {"b": "a"}, False),
        ("!a", {"b": "x"}, True),
        ("!a", {"a": ""}, False),
        ("a=", {"a": ""}, True),
        ("a=", {}, False),
        ("a in ()", {"a": ""}, True),
        ("a>5", {"a": "6"}, True),
        ("a>5", {"a": "5"}, False),
        ("a>5", {"a": "x"}, False),
        ("a>5", {}, False),
        ("a<5", {"a": "-3"}, True),
        ("a<5", {"a": "+4"}, True),
        ("a<5", {"a": "5"}, False),
        ("a<5", {"a": "4.5"}, False),
        ("a<5", {"a": "99999999999999999999"}, False),  # beyond 64 bits
        ("app=web,tier in (fe,be),!canary", {"app": "web", "tier": "fe"}, True),
        ("app=web,tier in (fe,be),!canary", {"app": "web", "tier": "fe", "canary": "1"}, False),
        ("app=web,tier in (fe,be),!canary", {"app": "db", "tier": "fe"}, False),
    ],
)
def test_label_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_matching_none_labels_means_no_labels() -> None:
    assert parse_label_selector("!a").matches(None)
    assert not parse_label_selector("a").matches(None)
    assert parse_label_selector("a!=b").matches(None)


# --------------------------------------------------------------------------- label errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a in x",
            "unable to parse requirement: \"a in x\": values for 'in' must be in parentheses",
        ),
        (
            "b=c,a notin x",
            "unable to parse requirement: \"a notin x\": values for 'notin' must be in parentheses",
        ),
        (
            "a in (x y)",
            "unable to parse requirement: \"a in (x y)\": found 'y', expected ',' or ')'",
        ),
        (
            "a in (x",
            "unable to parse requirement: \"a in (x\": found end of selector, expected ',' or ')'",
        ),
        (
            "a in (",
            'unable to parse requirement: "a in (": found end of selector, '
            "expected a value, ',' or ')'",
        ),
        (
            "a in (=)",
            "unable to parse requirement: \"a in (=)\": found '=', expected a value, ',' or ')'",
        ),
        (
            "a in (x=)",
            "unable to parse requirement: \"a in (x=)\": found '=', expected ',' or ')'",
        ),
        (
            "a b",
            "unable to parse requirement: \"a b\": found 'b', expected an operator "
            "('=', '==', '!=', 'in', 'notin', '>' or '<')",
        ),
        (
            "a!",
            "unable to parse requirement: \"a!\": found '!', expected an operator "
            "('=', '==', '!=', 'in', 'notin', '>' or '<')",
        ),
        (
            "a=b c",
            "unable to parse requirement: \"a=b c\": found 'c', expected ',' or end of selector",
        ),
        (
            "a=b=c",
            "unable to parse requirement: \"a=b=c\": found '=', expected ',' or end of selector",
        ),
        (
            "a=(x)",
            "unable to parse requirement: \"a=(x)\": found '(', expected a value after '='",
        ),
        (
            "!(a)",
            "unable to parse requirement: \"!(a)\": found '(' after '!', expected a label key",
        ),
        (
            "!",
            "unable to parse requirement: \"!\": found end of selector after '!', "
            "expected a label key",
        ),
        (
            "a=b,",
            "unable to parse label selector \"a=b,\": found end of selector after ',', "
            "expected '!' or a label key",
        ),
        (
            "a=b,,c",
            "unable to parse label selector \"a=b,,c\": found ',' after ',', "
            "expected '!' or a label key",
        ),
        (",a", "unable to parse label selector \",a\": found ',', expected '!' or a label key"),
        ("=a", "unable to parse label selector \"=a\": found '=', expected '!' or a label key"),
        (
            "a>x",
            'unable to parse requirement: "a>x": the value for \'>\' must be an integer, found "x"',
        ),
        (
            "a<",
            'unable to parse requirement: "a<": the value for \'<\' must be an integer, found ""',
        ),
    ],
)
def test_label_selector_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    assert str(info.value) == message


def test_selector_error_is_value_error() -> None:
    assert issubclass(SelectorError, ValueError)


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("-a=b", 'unable to parse requirement: "-a=b": invalid label key "-a": name part must'),
        ("a/b/c", 'unable to parse requirement: "a/b/c": invalid label key "a/b/c": a qualified'),
        (
            "Bad_/x",
            'unable to parse requirement: "Bad_/x": invalid label key "Bad_/x": prefix part',
        ),
        (
            "x=1,k in (ok,-no)",
            'unable to parse requirement: "k in (ok,-no)": invalid label value "-no" for key "k": '
            "a valid label must be an empty string",
        ),
        (
            "a=" + "v" * 64,
            f'unable to parse requirement: "a={"v" * 64}": invalid label value "{"v" * 64}" '
            'for key "a": must be no more than 63 characters',
        ),
        ("a>-1", 'unable to parse requirement: "a>-1": invalid label value "-1"'),
    ],
)
def test_label_selector_validation_errors(text: str, start: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    assert str(info.value).startswith(start)


def test_invalid_key_message_names_the_rule() -> None:
    with pytest.raises(SelectorError, match=r"regex used for validation is"):
        parse_label_selector("-a")


# --------------------------------------------------------------------------- object form


def test_label_selector_object_match_labels() -> None:
    selector = selector_from_label_selector_object({"matchLabels": {"tier": "fe", "app": "web"}})
    assert str(selector) == "app=web,tier=fe"
    assert selector.matches({"app": "web", "tier": "fe", "pod-template-hash": "abc"})
    assert not selector.matches({"app": "web"})


@pytest.mark.parametrize(
    ("expression", "canonical", "yes", "no"),
    [
        (
            {"key": "a", "operator": "In", "values": ["x", "y"]},
            "a in (x,y)",
            {"a": "x"},
            {"a": "z"},
        ),
        ({"key": "a", "operator": "NotIn", "values": ["x"]}, "a notin (x)", {}, {"a": "x"}),
        ({"key": "a", "operator": "Exists"}, "a", {"a": ""}, {}),
        ({"key": "a", "operator": "Exists", "values": []}, "a", {"a": "1"}, {"b": "1"}),
        ({"key": "a", "operator": "DoesNotExist"}, "!a", {}, {"a": "1"}),
        ({"key": "a", "operator": "DoesNotExist", "values": None}, "!a", {"b": ""}, {"a": ""}),
    ],
)
def test_label_selector_object_expressions(
    expression: dict[str, Any], canonical: str, yes: dict[str, str], no: dict[str, str]
) -> None:
    selector = selector_from_label_selector_object({"matchExpressions": [expression]})
    assert str(selector) == canonical
    assert selector.matches(yes)
    assert not selector.matches(no)


def test_label_selector_object_combined() -> None:
    selector = selector_from_label_selector_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert str(selector) == "app=web,!canary,env in (prod,staging)"
    assert selector.matches({"app": "web", "env": "prod"})
    assert not selector.matches({"app": "web", "env": "prod", "canary": "true"})
    assert not selector.matches({"app": "web", "env": "dev"})


@pytest.mark.parametrize(
    "obj", [{}, {"matchLabels": {}}, {"matchLabels": None, "matchExpressions": []}]
)
def test_label_selector_object_empty_matches_everything(obj: dict[str, Any]) -> None:
    selector = selector_from_label_selector_object(obj)
    assert selector.empty
    assert selector.matches({"a": "b"})
    assert selector.matches(None)


def test_label_selector_object_none_matches_nothing() -> None:
    selector = selector_from_label_selector_object(None)
    assert not selector.empty
    assert selector.matches_nothing
    assert not selector.matches({})
    assert not selector.matches({"a": "b"})
    assert selector == LabelSelector.nothing()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
            'matchExpressions[0]: "Equals" is not a valid label selector operator, '
            "expected one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            {"matchExpressions": [{"key": "a"}]},
            "matchExpressions[0]: null is not a valid label selector operator, "
            "expected one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "matchExpressions[0]: values for 'in' must not be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn"}]},
            "matchExpressions[0]: values for 'notin' must not be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "matchExpressions[0]: operator 'exists' takes no values",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]},
            "matchExpressions[0]: operator '!' takes no values",
        ),
        (
            {"matchExpressions": [{"operator": "Exists"}]},
            "matchExpressions[0].key must be a string, got null",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]},
            "matchExpressions[0].values must be a list of strings",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]},
            "matchExpressions[0].values must be a list of strings",
        ),
        ({"matchExpressions": ["a"]}, "matchExpressions[0] must be an object, got string"),
        ({"matchExpressions": {"a": 1}}, "matchExpressions must be a list of objects, got object"),
        ({"matchLabels": ["a"]}, "matchLabels must be a map of strings to strings, got array"),
        ({"matchLabels": {"a": 1}}, 'matchLabels["a"] must be a string, got number'),
        ("app=web", "a label selector must be an object, got string"),
    ],
)
def test_label_selector_object_errors(obj: Any, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        selector_from_label_selector_object(obj)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("obj", "start"),
    [
        ({"matchLabels": {"-a": "b"}}, 'matchLabels["-a"]: invalid label key "-a": name part'),
        ({"matchLabels": {"a": "b c"}}, 'matchLabels["a"]: invalid label value "b c" for key "a"'),
        (
            {"matchExpressions": [{"key": "a b", "operator": "Exists"}]},
            'matchExpressions[0]: invalid label key "a b"',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "-x"]}]},
            'matchExpressions[0]: invalid label value "-x" for key "a"',
        ),
    ],
)
def test_label_selector_object_validation(obj: dict[str, Any], start: str) -> None:
    with pytest.raises(SelectorError) as info:
        selector_from_label_selector_object(obj)
    assert str(info.value).startswith(start)


# --------------------------------------------------------------------------- label sets


def test_selector_from_set() -> None:
    selector = selector_from_set({"app": "web", "tier": "fe"})
    assert str(selector) == "app=web,tier=fe"
    assert selector.matches({"app": "web", "tier": "fe", "x": "y"})
    assert not selector.matches({"app": "web"})


@pytest.mark.parametrize("labels", [None, {}])
def test_selector_from_empty_set_matches_everything(labels: dict[str, str] | None) -> None:
    assert selector_from_set(labels).empty


@pytest.mark.parametrize("labels", [{"a": 1}, {"-a": "b"}, {"a": "-b"}])
def test_selector_from_set_rejects_invalid(labels: Any) -> None:
    with pytest.raises(SelectorError):
        selector_from_set(labels)


# --------------------------------------------------------------------------- fields

ALLOWED = ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase")


@pytest.mark.parametrize(
    ("text", "requirements", "canonical"),
    [
        ("", [], ""),
        ("metadata.name=web", [("metadata.name", "web", False)], "metadata.name=web"),
        ("metadata.name==web", [("metadata.name", "web", False)], "metadata.name=web"),
        ("status.phase!=Failed", [("status.phase", "Failed", True)], "status.phase!=Failed"),
        ("spec.nodeName=", [("spec.nodeName", "", False)], "spec.nodeName="),
        (
            "status.phase!=Failed,metadata.name=web,",
            [("metadata.name", "web", False), ("status.phase", "Failed", True)],
            "metadata.name=web,status.phase!=Failed",
        ),
        (
            r"metadata.name=a\,b\=c\\d",
            [("metadata.name", "a,b=c\\d", False)],
            r"metadata.name=a\,b\=c\\d",
        ),
        ("metadata.name=!x", [("metadata.name", "!x", False)], "metadata.name=!x"),
    ],
)
def test_parse_field_selector(
    text: str, requirements: list[tuple[str, str, bool]], canonical: str
) -> None:
    selector = parse_field_selector(text, ALLOWED)
    assert selector.requirements == tuple(FieldRequirement(*r) for r in requirements)
    assert str(selector) == canonical
    assert parse_field_selector(str(selector), ALLOWED) == selector


@pytest.mark.parametrize(
    ("text", "fields", "expected"),
    [
        ("", {"metadata.name": "x"}, True),
        ("metadata.name=web", {"metadata.name": "web"}, True),
        ("metadata.name=web", {"metadata.name": "db"}, False),
        ("metadata.name==web", {"metadata.name": "web"}, True),
        ("metadata.name!=web", {"metadata.name": "db"}, True),
        ("metadata.name!=web", {"metadata.name": "web"}, False),
        ("spec.nodeName=", {"metadata.name": "p"}, True),  # a missing field is ""
        ("spec.nodeName!=", {"metadata.name": "p"}, False),
        ("spec.nodeName!=", {"spec.nodeName": "n1"}, True),
        (
            "metadata.name=web,metadata.namespace=prod",
            {"metadata.name": "web", "metadata.namespace": "prod"},
            True,
        ),
        (
            "metadata.name=web,metadata.namespace=prod",
            {"metadata.name": "web", "metadata.namespace": "dev"},
            False,
        ),
        (r"metadata.name=a\,b", {"metadata.name": "a,b"}, True),
    ],
)
def test_field_matching(text: str, fields: dict[str, str], expected: bool) -> None:
    assert parse_field_selector(text, ALLOWED).matches(fields) is expected


def test_field_selector_empty() -> None:
    assert parse_field_selector("", ALLOWED).empty
    assert parse_field_selector(",", ALLOWED).empty
    assert FieldSelector().matches({})
    assert not parse_field_selector("metadata.name=a", ALLOWED).empty


def test_requires_exact_match() -> None:
    selector = parse_field_selector("status.phase!=Failed,metadata.name=web", ALLOWED)
    assert selector.requires_exact_match("metadata.name") == "web"
    assert selector.requires_exact_match("status.phase") is None
    assert selector.requires_exact_match("spec.nodeName") is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("spec.replicas=1", "spec.replicas"),
        ("metadata.name=a,metadata.uid=x", "metadata.uid"),
        ("metadata.name =a", "metadata.name "),  # blanks are not trimmed
    ],
)
def test_field_not_supported(text: str, field: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text, ALLOWED)
    assert str(info.value) == f"field label not supported: {field}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "metadata.name",
            'invalid field selector "metadata.name": can\'t understand "metadata.name", '
            "expected <field>=<value>, <field>==<value> or <field>!=<value>",
        ),
        (
            "metadata.name=a,b",
            'invalid field selector "metadata.name=a,b": can\'t understand "b", '
            "expected <field>=<value>, <field>==<value> or <field>!=<value>",
        ),
        (
            "=web",
            'invalid field selector "=web": "=web" has no field name, '
            "expected <field>=<value>, <field>==<value> or <field>!=<value>",
        ),
        (
            "metadata.name=a=b",
            "invalid field selector term \"metadata.name=a=b\": unescaped '=' in value, "
            "expected '\\='",
        ),
        (
            r"metadata.name=a\x",
            'invalid field selector term "metadata.name=a\\\\x": invalid escape sequence '
            "'\\x', expected '\\\\', '\\,' or '\\='",
        ),
        (
            "metadata.name=a\\",
            "invalid field selector term \"metadata.name=a\\\\\": value ends in a lone '\\', "
            "expected '\\\\', '\\,' or '\\='",
        ),
    ],
)
def test_field_selector_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text, ALLOWED)
    assert str(info.value) == message


def test_syntax_errors_come_before_unsupported_fields() -> None:
    with pytest.raises(SelectorError, match="can't understand"):
        parse_field_selector("nope=1,broken", ALLOWED)


@pytest.mark.parametrize(
    ("obj", "namespaced", "fields"),
    [
        (
            {"metadata": {"name": "web", "namespace": "prod", "labels": {"a": "b"}}},
            True,
            {"metadata.name": "web", "metadata.namespace": "prod"},
        ),
        ({"metadata": {"name": "node-1"}}, False, {"metadata.name": "node-1"}),
        ({"metadata": {"name": "web"}}, True, {"metadata.name": "web", "metadata.namespace": ""}),
        ({}, True, {"metadata.name": "", "metadata.namespace": ""}),
        ({"metadata": None}, False, {"metadata.name": ""}),
    ],
)
def test_object_fields(obj: dict[str, Any], namespaced: bool, fields: dict[str, str]) -> None:
    assert object_fields(obj, namespaced) == fields


def test_object_fields_feed_field_selectors() -> None:
    obj = {"metadata": {"name": "web", "namespace": "prod"}}
    selector = parse_field_selector("metadata.namespace=prod,metadata.name=web", ALLOWED)
    assert selector.matches(object_fields(obj, namespaced=True))
    assert not selector.matches(object_fields(obj, namespaced=False))
