"""Validation of the names and label strings of the embedded Kubernetes API.

isthmus's API server accepts the same object names, label keys and label
values as Kubernetes and rejects the others with the same messages, so that
``kubectl`` users see the errors they know. Each validator returns the list of
problems with its argument, empty when the argument is valid; the caller
decides which rule applies to which kind and how to report the problems.

Promises:

* the accepted sets are exactly Kubernetes' (same regular expressions, same
  length limits, counted in UTF-8 bytes);
* the messages are Kubernetes' wording, in Kubernetes' order;
* pure functions: no I/O, no state.
"""

from __future__ import annotations

import re

__all__ = [
    "DNS1035_LABEL_MAX_LENGTH",
    "DNS1123_LABEL_MAX_LENGTH",
    "DNS1123_SUBDOMAIN_MAX_LENGTH",
    "LABEL_VALUE_MAX_LENGTH",
    "QUALIFIED_NAME_MAX_LENGTH",
    "validate_dns1035_label",
    "validate_dns1123_label",
    "validate_dns1123_subdomain",
    "validate_label_key",
    "validate_label_value",
    "validate_path_segment_name",
    "validate_qualified_name",
]

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
DNS1035_LABEL_MAX_LENGTH = 63
QUALIFIED_NAME_MAX_LENGTH = 63
LABEL_VALUE_MAX_LENGTH = 63

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)

_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE = re.compile(_DNS1035_LABEL_FMT)
_QUALIFIED_NAME_RE = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Kubernetes' phrasing of a failed pattern match, examples included."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _length(value: str) -> int:
    """Length as Kubernetes counts it: bytes of the UTF-8 encoding."""
    return len(value.encode("utf-8", errors="surrogatepass"))


def _mask_trailing_dash(name: str) -> str:
    """Stand-in for a generateName prefix: a random suffix will follow a final '-'."""
    if len(name) > 1 and name.endswith("-"):
        return name[:-1] + "a"
    return name


def validate_dns1123_subdomain(name: str, *, prefix: bool = False) -> list[str]:
    """Problems with ``name`` as an RFC 1123 subdomain (most object names).

    At most 253 characters of lower case alphanumerics, '-' and '.', starting
    and ending with an alphanumeric. With ``prefix=True`` the value is a
    ``generateName`` prefix, and a trailing '-' is allowed.
    """
    if prefix:
        name = _mask_trailing_dash(name)
    errors: list[str] = []
    if _length(name) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errors.append(_max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(name):
        errors.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errors


def validate_dns1123_label(name: str, *, prefix: bool = False) -> list[str]:
    """Problems with ``name`` as an RFC 1123 label (namespaces, for example).

    Like a subdomain, but at most 63 characters and without dots.
    """
    if prefix:
        name = _mask_trailing_dash(name)
    errors: list[str] = []
    if _length(name) > DNS1123_LABEL_MAX_LENGTH:
        errors.append(_max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if not _DNS1123_LABEL_RE.fullmatch(name):
        if _DNS1123_SUBDOMAIN_RE.fullmatch(name):
            # A valid subdomain that is no valid label: the dots are the problem.
            errors.append("must not contain dots")
        else:
            errors.append(
                _regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc")
            )
    return errors


def validate_dns1035_label(name: str, *, prefix: bool = False) -> list[str]:
    """Problems with ``name`` as an RFC 1035 label (Service names).

    Like an RFC 1123 label, but it must start with a letter.
    """
    if prefix:
        name = _mask_trailing_dash(name)
    errors: list[str] = []
    if _length(name) > DNS1035_LABEL_MAX_LENGTH:
        errors.append(_max_len_error(DNS1035_LABEL_MAX_LENGTH))
    if not _DNS1035_LABEL_RE.fullmatch(name):
        errors.append(_regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errors


def validate_qualified_name(value: str) -> list[str]:
    """Problems with ``value`` as a qualified name: ``[prefix/]name``.

    The optional prefix is a DNS subdomain; the name is at most 63
    alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric.
    Label keys and annotation keys are qualified names.
    """
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + msg for msg in validate_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif _length(name) > QUALIFIED_NAME_MAX_LENGTH:
        errors.append("name part " + _max_len_error(QUALIFIED_NAME_MAX_LENGTH))
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        errors.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errors


def validate_label_key(key: str) -> list[str]:
    """Problems with ``key`` as a label key (a qualified name)."""
    return validate_qualified_name(key)


def validate_label_value(value: str) -> list[str]:
    """Problems with ``value`` as a label value.

    Empty, or at most 63 alphanumerics, '-', '_' and '.', starting and ending
    with an alphanumeric.
    """
    errors: list[str] = []
    if _length(value) > LABEL_VALUE_MAX_LENGTH:
        errors.append(_max_len_error(LABEL_VALUE_MAX_LENGTH))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errors.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errors


def validate_path_segment_name(name: str, *, prefix: bool = False) -> list[str]:
    """Problems with ``name`` as one segment of a URL path.

    Every object name ends up in a URL, so none may be '.' or '..' or contain
    '/' or '%'. With ``prefix=True`` (a ``generateName``), only the forbidden
    characters are checked.
    """
    errors: list[str] = []
    if not prefix:
        errors.extend(f"may not be '{bad}'" for bad in (".", "..") if name == bad)
    errors.extend(f"may not contain '{bad}'" for bad in ("/", "%") if bad in name)
    return errors
