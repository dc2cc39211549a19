"""Kubernetes name and label validation: accepted sets and message wording."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from isthmus.core.names import (
    validate_dns1035_label,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_label_key,
    validate_label_value,
    validate_path_segment_name,
    validate_qualified_name,
)

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "0",
        "web",
        "my-app",
        "example.com",
        "a.b.c",
        "1-2.3-4",
        "a" * 253,
        ("a" * 63 + ".") * 3 + "a",
    ],
)
def test_dns1123_subdomain_accepts(name: str) -> None:
    assert validate_dns1123_subdomain(name) == []


@pytest.mark.parametrize(
    "name",
    ["", "Web", "-a", "a-", ".a", "a.", "a..b", "a_b", "a b", "a/b", "ä", "a.-b", "web\n"],
)
def test_dns1123_subdomain_rejects_with_kubernetes_message(name: str) -> None:
    assert validate_dns1123_subdomain(name) == [SUBDOMAIN_MSG]


def test_dns1123_subdomain_too_long() -> None:
    assert validate_dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]


def test_dns1123_subdomain_too_long_and_malformed_reports_both() -> None:
    assert validate_dns1123_subdomain("A" * 254) == [
        "must be no more than 253 characters",
        SUBDOMAIN_MSG,
    ]


def test_length_counts_utf8_bytes() -> None:
    # 127 two-byte characters are 254 bytes.
    assert validate_dns1123_subdomain("é" * 127)[0] == "must be no more than 253 characters"


@pytest.mark.parametrize("name", ["a", "default", "kube-system", "0abc", "a" * 63])
def test_dns1123_label_accepts(name: str) -> None:
    assert validate_dns1123_label(name) == []


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a b", "a..b", ".a"])
def test_dns1123_label_rejects_with_kubernetes_message(name: str) -> None:
    assert validate_dns1123_label(name) == [LABEL_MSG]


def test_dns1123_label_with_dots_says_so() -> None:
    assert validate_dns1123_label("a.b") == ["must not contain dots"]


def test_dns1123_label_too_long() -> None:
    assert validate_dns1123_label("a" * 64) == ["must be no more than 63 characters"]


@pytest.mark.parametrize("name", ["a", "web", "my-svc", "a1", "a" * 63])
def test_dns1035_label_accepts(name: str) -> None:
    assert validate_dns1035_label(name) == []


@pytest.mark.parametrize("name", ["", "1abc", "-a", "a-", "A", "a.b", "a_b"])
def test_dns1035_label_rejects_with_kubernetes_message(name: str) -> None:
    assert validate_dns1035_label(name) == [DNS1035_MSG]


def test_dns1035_label_too_long() -> None:
    assert validate_dns1035_label("a" * 64) == ["must be no more than 63 characters"]


@pytest.mark.parametrize(
    ("validator", "prefix"),
    [
        (validate_dns1123_subdomain, "my-pod-"),
        (validate_dns1123_label, "web-"),
        (validate_dns1035_label, "svc-"),
    ],
)
def test_generate_name_prefix_may_end_in_dash(
    validator: Callable[..., list[str]], prefix: str
) -> None:
    assert validator(prefix, prefix=True) == []
    assert validator(prefix) != []


@pytest.mark.parametrize(
    "key",
    [
        "app",
        "App",
        "a",
        "app.kubernetes.io/name",
        "example.com/My_Key-1.x",
        "k8s.io/a",
        "a" * 63,
        "p/" + "a" * 63,
    ],
)
def test_label_key_accepts(key: str) -> None:
    assert validate_label_key(key) == []
    assert validate_qualified_name(key) == []


@pytest.mark.parametrize(
    ("key", "errors"),
    [
        ("", ["name part must be non-empty", NAME_PART_MSG]),
        ("-a", [NAME_PART_MSG]),
        ("a-", [NAME_PART_MSG]),
        ("a b", [NAME_PART_MSG]),
        ("a" * 64, ["name part must be no more than 63 characters"]),
        ("/a", ["prefix part must be non-empty"]),
        ("a/", ["name part must be non-empty", NAME_PART_MSG]),
        ("Example.com/a", ["prefix part " + SUBDOMAIN_MSG]),
        ("ex_ample/a", ["prefix part " + SUBDOMAIN_MSG]),
        ("Bad/-a", ["prefix part " + SUBDOMAIN_MSG, NAME_PART_MSG]),
    ],
)
def test_label_key_rejects(key: str, errors: list[str]) -> None:
    assert validate_label_key(key) == errors


def test_label_key_with_two_slashes() -> None:
    assert validate_label_key("a/b/c") == [
        "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must "
        "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
        "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') "
        "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
    ]


@pytest.mark.parametrize("value", ["", "a", "MyValue", "my_value", "12345", "v1.2-3_x", "a" * 63])
def test_label_value_accepts(value: str) -> None:
    assert validate_label_value(value) == []


@pytest.mark.parametrize("value", ["-a", "a-", "_a", "a b", "a/b", "ä", "a:b", ".a"])
def test_label_value_rejects_with_kubernetes_message(value: str) -> None:
    assert validate_label_value(value) == [VALUE_MSG]


def test_label_value_too_long() -> None:
    assert validate_label_value("a" * 64) == ["must be no more than 63 characters"]


@pytest.mark.parametrize(
    ("name", "prefix", "errors"),
    [
        ("web", False, []),
        (".", False, ["may not be '.'"]),
        ("..", False, ["may not be '..'"]),
        ("a/b", False, ["may not contain '/'"]),
        ("a%b", False, ["may not contain '%'"]),
        ("%/", False, ["may not contain '/'", "may not contain '%'"]),
        (".", True, []),
        ("a/", True, ["may not contain '/'"]),
    ],
)
def test_path_segment_name(name: str, prefix: bool, errors: list[str]) -> None:
    assert validate_path_segment_name(name, prefix=prefix) == errors
