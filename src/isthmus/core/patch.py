"""The three PATCH formats of the embedded Kubernetes API.

isthmus's API server accepts ``application/merge-patch+json``,
``application/json-patch+json`` and ``application/strategic-merge-patch+json``
bodies, as ``kubectl patch``, ``kubectl apply``, ``kubectl label``,
``kubectl set ...`` and controllers send them. This module computes the
patched object; the caller decodes the body, supplies the schema's patch
metadata, and validates the result.

Promises:

* :func:`merge_patch` is RFC 7386 JSON merge patch;
* :func:`json_patch` is RFC 6902 JSON patch;
* :func:`strategic_merge_patch` is Kubernetes' strategic merge patch, driven
  by the ``x-kubernetes-patch-strategy`` / ``x-kubernetes-patch-merge-key``
  metadata the caller provides through :class:`PatchMeta`; no ``$``-directive
  of the patch survives into its result;
* none of them mutates its arguments, and the result shares no mutable
  containers with them;
* every malformed patch, and every patch that cannot apply, raises
  :class:`PatchError` (a ValueError) with a message saying where and why;
* pure: no I/O, no state.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Hashable
from typing import Any, Final, Protocol

import jsonpatch
from jsonpointer import JsonPointerException

from isthmus.core.jsonvalue import json_type

__all__ = [
    "MAX_JSON_PATCH_OPERATIONS",
    "PatchError",
    "PatchMeta",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
]

MAX_JSON_PATCH_OPERATIONS: Final = 10000
"""The most operations one JSON patch may hold, as in Kubernetes."""


class PatchError(ValueError):
    """A patch that is malformed or cannot be applied to the document."""




def _show(value: Any) -> str:
    """``value`` as compact JSON, for messages."""
    return json.dumps(value, default=str)


# --------------------------------------------------------------------------- merge patch


def merge_patch(doc: dict[str, Any], patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch to ``doc`` and return the result.

    Objects merge recursively and a null member deletes; any other patch
    value (arrays included) replaces the target. A patch that is not an
    object replaces the whole document.
    """
    return _merge_patch_value(doc, patch)


def _merge_patch_value(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch_value(result.get(key), value)
    # Untouched members are still shared with ``target``; copy them too.
    return {key: value if key in patch else copy.deepcopy(value) for key, value in result.items()}


# --------------------------------------------------------------------------- JSON patch


def json_patch(doc: dict[str, Any], ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch (a list of operations) and return the result.

    The operations apply in order to a copy of ``doc``; if one fails, nothing
    is returned and PatchError names the failing operation and its path.
    """
    if not isinstance(ops, list):
        raise PatchError(f"a json patch must be an array of operations, got {json_type(ops)}")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchError(
            f"a json patch may hold at most {MAX_JSON_PATCH_OPERATIONS} operations, got {len(ops)}"
        )
    for index, op in enumerate(ops):
        if not isinstance(op, dict):
            raise PatchError(
                f"json patch operation {index}: must be an object, got {json_type(op)}"
            )
        for member in ("op", "path"):
            if member not in op:
                raise PatchError(f"json patch operation {index}: missing member {member!r}")
            if not isinstance(op[member], str):
                raise PatchError(
                    f"json patch operation {index}: {member!r} must be a string, "
                    f"got {json_type(op[member])}"
                )
    result = copy.deepcopy(doc)
    for index, op in enumerate(ops):
        where = f"json patch operation {index} ({op['op']} {op['path']!r})"
        try:
            result = jsonpatch.JsonPatch([op]).apply(result, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise PatchError(f"{where}: test failed: {exc}") from exc
        except jsonpatch.InvalidJsonPatch as exc:
            raise PatchError(f"{where}: invalid operation: {exc}") from exc
        except jsonpatch.JsonPatchConflict as exc:
            raise PatchError(f"{where}: cannot apply: {exc}") from exc
        except JsonPointerException as exc:
            raise PatchError(f"{where}: bad path: {exc}") from exc
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise PatchError(f"{where}: cannot apply: {exc}") from exc
    return result


# --------------------------------------------------------------------------- strategic merge patch


class PatchMeta(Protocol):
    """Strategic-merge metadata of one field of a schema.

    The schema layer implements it from the ``x-kubernetes-patch-strategy``
    and ``x-kubernetes-patch-merge-key`` extensions. A None meta means "no
    metadata" and gives JSON-merge-patch behaviour: maps merge, lists are
    replaced.
    """

    def field(self, name: str) -> PatchMeta | None:
        """Meta of the property ``name`` of this object."""
        ...

    def items(self) -> PatchMeta | None:
        """Meta of the elements of this list, or of the values of this map."""
        ...

    @property
    def merge_key(self) -> str | None:
        """The merge key of this list of objects, if any."""
        ...

    @property
    def strategy(self) -> str:
        """The patch strategy: empty, "merge", "replace", "retainKeys" or "merge,retainKeys"."""
        ...


_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"
_DELETED: Final = object()  # a value the patch removes


def strategic_merge_patch(
    doc: dict[str, Any], patch: dict[str, Any], meta: PatchMeta | None
) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch to ``doc`` and return the result.

    ``meta`` describes the top-level object (None: no metadata at all).

    * Maps merge recursively; a null value deletes the key.
    * A list whose strategy includes "merge" is merged: with a merge key,
      patch elements merge into the element with the same key value and new
      ones are appended; without one (lists of scalars such as finalizers) it
      is a union. Elements merged by key keep the server's order and new ones
      come first, in patch order (as Kubernetes orders them), unless
      ``$setElementOrder/<list>`` gives the order.
    * Other lists, and maps whose strategy is "replace", are replaced.
    * Directives: ``$patch: replace`` / ``$patch: delete`` in a map replace or
      delete that map; ``{"$patch": "replace"}`` as a list element replaces the
      list; ``{"<key>": ..., "$patch": "delete"}`` deletes the element with
      that merge key; ``$deleteFromPrimitiveList/<list>`` removes scalars;
      ``$setElementOrder/<list>`` orders a merged list; ``$retainKeys`` drops
      the keys of a map it does not list before merging.

    A ``$patch: delete`` at the top level empties the whole object.
    """
    if not isinstance(doc, dict):
        raise PatchError(f"the patched document must be an object, got {json_type(doc)}")
    if not isinstance(patch, dict):
        raise PatchError(f"a strategic merge patch must be an object, got {json_type(patch)}")
    result = _merge_map(copy.deepcopy(doc), patch, meta, "")
    return {} if result is _DELETED else result


def _strategies(meta: PatchMeta | None) -> set[str]:
    if meta is None:
        return set()
    return {part.strip() for part in (meta.strategy or "").split(",") if part.strip()}


def _child_meta(meta: PatchMeta | None, name: str) -> PatchMeta | None:
    """Meta of the member ``name`` of a map: a property, else a map value."""
    if meta is None:
        return None
    child = meta.field(name)
    return child if child is not None else meta.items()


def _items_meta(meta: PatchMeta | None) -> PatchMeta | None:
    return meta.items() if meta is not None else None


def _identity(value: Any) -> Hashable:
    """A hashable identity of a JSON value; equal JSON values share it.

    Booleans are kept apart from the numbers 0 and 1.
    """
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return ("json", json.dumps(value, sort_keys=True, default=str))


def _path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _merge_map(
    original: dict[str, Any] | None, patch: dict[str, Any], meta: PatchMeta | None, path: str
) -> Any:
    """Merge ``patch`` into ``original`` (modified in place, or None for "absent").

    Returns the merged map, or _DELETED for ``$patch: delete``.
    """
    where = path or "the object"
    if _PATCH in patch:
        directive = patch[_PATCH]
        if directive == "delete":
            return _DELETED
        if directive == "replace":
            rest = {key: value for key, value in patch.items() if key != _PATCH}
            return _merge_map(None, rest, meta, path)
        raise PatchError(
            f"{where}: unknown $patch directive {_show(directive)} in a map, "
            'expected "replace" or "delete"'
        )

    result: dict[str, Any] = original if original is not None else {}

    # Sort the members of the patch by the field they act on.
    plain: dict[str, Any] = {}
    orders: dict[str, Any] = {}
    deletions: dict[str, Any] = {}
    fields: dict[str, None] = {}  # the fields acted on, in order of appearance
    retain: Any = None
    has_retain = False
    for key, value in patch.items():
        if key == _RETAIN_KEYS:
            retain, has_retain = value, True
            continue
        if key.startswith(_SET_ORDER):
            name = key[len(_SET_ORDER) :]
            orders[name] = value
        elif key.startswith(_DELETE_FROM):
            name = key[len(_DELETE_FROM) :]
            deletions[name] = value
        elif key.startswith(("$setElementOrder", "$deleteFromPrimitiveList")):
            raise PatchError(f"{where}: directive {key!r} must be followed by '/<list name>'")
        elif key.startswith("$"):
            raise PatchError(
                f"{where}: unknown patch directive {key!r}, expected $patch, $retainKeys, "
                "$setElementOrder/<list> or $deleteFromPrimitiveList/<list>"
            )
        else:
            name = key
            plain[name] = value
        if key.startswith("$") and not name:
            raise PatchError(f"{where}: directive {key!r} names no list")
        fields[name] = None

    if has_retain:
        _apply_retain_keys(result, retain, plain, where)

    for name in fields:
        field_path = _path(path, name)
        field_meta = _child_meta(meta, name)
        original_value = result.get(name)
        if name in plain:
            value = plain[name]
            if value is None:
                if name in orders:
                    raise PatchError(
                        f"{field_path}: $setElementOrder/{name} given, but the list is set to null"
                    )
                result.pop(name, None)
            else:
                merged = _merge_value(original_value, value, field_meta, field_path)
                if merged is _DELETED:
                    result.pop(name, None)
                else:
                    result[name] = merged
        if name in deletions:
            _delete_from_primitive_list(result, name, deletions[name], field_path)
        if name in orders:
            _set_element_order(
                result,
                name,
                orders[name],
                original_value if isinstance(original_value, list) else [],
                plain.get(name),
                field_meta,
                field_path,
            )
    return result


def _apply_retain_keys(
    result: dict[str, Any], retain: Any, plain: dict[str, Any], where: str
) -> None:
    if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
        raise PatchError(f"{where}: $retainKeys must be a list of field names")
    keep = set(retain)
    for key, value in plain.items():
        if value is not None and key not in keep:
            raise PatchError(
                f"{where}: the patch sets {key!r}, which $retainKeys {_show(retain)} does not list"
            )
    for key in [key for key in result if key not in keep]:
        del result[key]


def _merge_value(original: Any, patch: Any, meta: PatchMeta | None, path: str) -> Any:
    """The merge of one non-null patch value into an original value (or None)."""
    if isinstance(patch, dict):
        if isinstance(original, dict) and "replace" not in _strategies(meta):
            return _merge_map(original, patch, meta, path)
        return _merge_map(None, patch, meta, path)
    if isinstance(patch, list):
        return _merge_list(original if isinstance(original, list) else [], patch, meta, path)
    return patch


def _merge_list(original: list[Any], patch: list[Any], meta: PatchMeta | None, path: str) -> Any:
    """The merge of a patch list into an original list (modified in place)."""
    if "merge" not in _strategies(meta):
        return _replacement_list(patch, meta, path)
    elements = original + patch
    if not elements:
        return original
    if any(isinstance(e, list) for e in elements):
        raise PatchError(f"{path}: lists of lists cannot be merged")
    if all(isinstance(e, dict) for e in elements):
        merge_key = meta.merge_key if meta is not None else None
        if not merge_key:
            raise PatchError(f"{path}: cannot merge a list of objects that has no merge key")
        return _merge_keyed_list(original, patch, merge_key, _items_meta(meta), path)
    if any(isinstance(e, dict) for e in elements):
        raise PatchError(f"{path}: cannot merge a list that mixes objects and scalars")
    # A set of scalars: the union, existing elements first.
    seen: set[Hashable] = set()
    union: list[Any] = []
    for element in elements:
        identity = _identity(element)
        if identity not in seen:
            seen.add(identity)
            union.append(element)
    return union


def _replacement_list(patch: list[Any], meta: PatchMeta | None, path: str) -> list[Any]:
    """A patch list that replaces the original: copied, its directives applied."""
    items_meta = _items_meta(meta)
    result: list[Any] = []
    for index, element in enumerate(patch):
        element_path = f"{path}[{index}]"
        if isinstance(element, dict) and _PATCH in element:
            directive = element[_PATCH]
            if directive == "replace":
                continue  # the list is replaced anyway
            if directive == "delete":
                raise PatchError(
                    f"{element_path}: $patch: delete needs a list merged by key, "
                    f"but {path or 'this list'} is replaced as a whole"
                )
            raise PatchError(
                f"{element_path}: unknown $patch directive {_show(directive)} in a list, "
                'expected "replace" or "delete"'
            )
        if isinstance(element, dict):
            result.append(_merge_map(None, element, items_meta, element_path))
        elif isinstance(element, list):
            result.append(_replacement_list(element, items_meta, element_path))
        else:
            result.append(element)
    return result


def _merge_keyed_list(
    original: list[Any],
    patch: list[Any],
    merge_key: str,
    items_meta: PatchMeta | None,
    path: str,
) -> list[Any]:
    replace = False
    deleted: set[Hashable] = set()
    updates: list[dict[str, Any]] = []
    for index, element in enumerate(patch):
        element_path = f"{path}[{index}]"
        if _PATCH in element:
            directive = element[_PATCH]
            if directive == "delete":
                if merge_key not in element:
                    raise PatchError(
                        f"{element_path}: $patch: delete needs the merge key {merge_key!r}"
                    )
                deleted.add(_identity(element[merge_key]))
            elif directive == "replace":
                replace = True
            elif directive == "merge":
                raise PatchError(f"{element_path}: $patch: merge is not supported in a list")
            else:
                raise PatchError(
                    f"{element_path}: unknown $patch directive {_show(directive)} in a list, "
                    'expected "replace" or "delete"'
                )
        elif merge_key not in element:
            raise PatchError(f"{element_path}: the element lacks the merge key {merge_key!r}")
        else:
            updates.append(element)

    if replace:
        server: list[Any] = []
    else:
        server = [
            e for e in original if merge_key not in e or _identity(e[merge_key]) not in deleted
        ]
    server_index = {
        _identity(e[merge_key]): i for i, e in enumerate(server) if merge_key in e
    }
    patched: list[Any] = []
    in_patch: set[Hashable] = set()
    for element in updates:
        identity = _identity(element[merge_key])
        in_patch.add(identity)
        element_path = f"{path}[{merge_key}={_show(element[merge_key])}]"
        position = server_index.get(identity)
        base = server[position] if position is not None else None
        patched.append(_merge_map(base, element, items_meta, element_path))
    server_only = [
        e for e in server if merge_key not in e or _identity(e[merge_key]) not in in_patch
    ]
    return _merge_sorted(server_only, patched, server_index, merge_key)


def _merge_sorted(
    server_only: list[Any], patched: list[Any], server_index: dict[Hashable, int], merge_key: str
) -> list[Any]:
    """Kubernetes' order for a merged keyed list (strategicpatch.mergeSortedSlice).

    Elements the server already had keep the server's relative order; an
    element new in the patch is placed before the server-only elements still
    to come, so new elements come first, in patch order.
    """

    def index(e: Any) -> int | None:
        return server_index.get(_identity(e[merge_key])) if merge_key in e else None

    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patched):
        if j >= len(patched):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            out.append(patched[j])
            j += 1
        else:
            left, right = index(server_only[i]), index(patched[j])
            if left is not None and right is not None and left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patched[j])
                j += 1
    return out


def _delete_from_primitive_list(
    result: dict[str, Any], name: str, to_delete: Any, path: str
) -> None:
    if not isinstance(to_delete, list) or any(isinstance(v, dict | list) for v in to_delete):
        raise PatchError(f"{path}: $deleteFromPrimitiveList/{name} must be a list of scalars")
    current = result.get(name)
    if not isinstance(current, list):
        return
    gone = {_identity(v) for v in to_delete}
    result[name] = [v for v in current if _identity(v) not in gone]


def _set_element_order(
    result: dict[str, Any],
    name: str,
    order: Any,
    server_order: list[Any],
    patch_list: Any,
    meta: PatchMeta | None,
    path: str,
) -> None:
    """Order the list ``result[name]`` as ``$setElementOrder/<name>`` says.

    Elements named in the order list come in that order; the others keep
    their place relative to them as far as the original list tells.
    """
    directive = f"$setElementOrder/{name}"
    if not isinstance(order, list):
        raise PatchError(f"{path}: {directive} must be a list, got {json_type(order)}")
    if patch_list is not None and not isinstance(patch_list, list):
        raise PatchError(
            f"{path}: {directive} given, but the patch value is not a list "
            f"({json_type(patch_list)})"
        )
    merge_key = meta.merge_key if meta is not None else None
    key_of: Callable[[Any], Hashable | None]
    if merge_key:
        mk = merge_key
        for index, item in enumerate(order):
            if not isinstance(item, dict) or mk not in item:
                raise PatchError(
                    f"{path}: element {index} of {directive} must be an object "
                    f"with the merge key {mk!r}"
                )

        def key_of(element: Any) -> Hashable | None:
            if isinstance(element, dict) and mk in element:
                return _identity(element[mk])
            return None

    else:
        # Without a merge key only scalars can be ordered; objects (as in a list
        # the schema does not describe) keep the order the merge gave them.

        def key_of(element: Any) -> Hashable | None:
            return None if isinstance(element, dict | list) else _identity(element)

    order_index: dict[Hashable, int] = {}
    for index, item in enumerate(order):
        item_key = key_of(item)
        if item_key is not None:
            order_index.setdefault(item_key, index)

    if patch_list:
        _check_patch_follows_order(patch_list, order_index, key_of, path, directive)

    current = result.get(name)
    if not isinstance(current, list):
        return

    server_index: dict[Hashable, int] = {}
    for index, element in enumerate(server_order):
        element_key = key_of(element)
        if element_key is not None:
            server_index.setdefault(element_key, index)

    def index_in(table: dict[Hashable, int], element: Any) -> int | None:
        element_key = key_of(element)
        return table.get(element_key) if element_key is not None else None

    ordered = [e for e in current if index_in(order_index, e) is not None]
    others = [e for e in current if index_in(order_index, e) is None]
    ordered.sort(key=lambda e: order_index[key_of(e)])
    # Elements of the original in original order; any others after them.
    known = sorted(
        (e for e in others if index_in(server_index, e) is not None),
        key=lambda e: server_index[key_of(e)],
    )
    others = known + [e for e in others if index_in(server_index, e) is None]

    # Interleave: an original-only element goes before the next ordered
    # element if it came before it in the original list.
    merged: list[Any] = []
    i = j = 0
    while i < len(others) or j < len(ordered):
        if i < len(others) and j < len(ordered):
            left, right = index_in(server_index, others[i]), index_in(server_index, ordered[j])
            take_other = left is not None and right is not None and left < right
        else:
            take_other = i < len(others)
        if take_other:
            merged.append(others[i])
            i += 1
        else:
            merged.append(ordered[j])
            j += 1
    result[name] = merged


def _check_patch_follows_order(
    patch_list: list[Any],
    order_index: dict[Hashable, int],
    key_of: Callable[[Any], Hashable | None],
    path: str,
    directive: str,
) -> None:
    """The patch's elements must appear in the order list, in the same order."""
    last = -1
    for element in patch_list:
        if isinstance(element, dict) and _PATCH in element:
            continue  # directives ($patch: delete / replace) are not ordered
        element_key = key_of(element)
        if element_key is None:
            continue  # an object of a list without merge key: not ordered
        position = order_index.get(element_key)
        if position is None or position < last:
            raise PatchError(
                f"{path}: the elements of the patch list do not follow {directive}: "
                f"{_show(element)} is "
                + ("missing from it" if position is None else "out of order")
            )
        last = position
