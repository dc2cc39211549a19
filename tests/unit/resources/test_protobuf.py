"""Kubernetes protobuf request bodies decoded into the JSON form of the object.

The fixtures in `protobuf_fixtures/` are of two sorts:

* request bodies captured from the real kubectl 1.32 (`CAPTURED` names the
  command); their `.json` files agree with what the same kubectl prints for
  the command with `--dry-run=client -o json`, less its `null` timestamps and
  empty `{}` objects;
* bodies built field by field for objects with many fields (`BUILT`), each
  served to the real kubectl 1.32 as a protobuf response, which decoded it to
  the same JSON (`kubectl create ... -o json`, `kubectl describe`). They cover
  the pod template closure, pod and node status, times and micro-times.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from isthmus.resources import protobuf, protobuf_fields
from isthmus.resources.protobuf import ProtobufError, _go_duration, decode
from isthmus.resources.protobuf_fields import KINDS, messages

FIXTURES = Path(__file__).parent / "protobuf_fixtures"

CAPTURED = {
    "namespace": "kubectl create namespace demo",
    "configmap": "kubectl create configmap cfg --from-literal=a=b --from-literal=hello=world",
    "secret-generic": "kubectl create secret generic s --from-literal=a=b",
    "serviceaccount": "kubectl create serviceaccount bot",
    "service-clusterip": "kubectl create service clusterip web --tcp=80:8080",
    "deployment": "kubectl create deployment web --image=nginx --port=80 --replicas=2 -- sleep 1",
    "role": "kubectl create role r --verb=get,list --resource=pods,configmaps --resource-name=x",
    "rolebinding": "kubectl create rolebinding rb --role=r --user=alice --serviceaccount=default:bot --group=g",
    "clusterrole": "kubectl create clusterrole cr --verb=get --resource=nodes --non-resource-url=/healthz",
    "clusterrolebinding": "kubectl create clusterrolebinding crb --clusterrole=cr --user=bob",
    "tokenrequest-bound": "kubectl create token default --audience=a1 --audience=a2 --duration=10m "
                          "--bound-object-kind=Pod --bound-object-name=p --bound-object-uid=123",
    "selfsubjectaccessreview": "kubectl auth can-i list pods",
    "selfsubjectaccessreview-nonresource": "kubectl auth can-i get /healthz",
    "selfsubjectrulesreview": "kubectl auth can-i --list -n kube-system",
}
BUILT = ["deployment-full", "pod-status", "node", "lease", "event", "service-full",
         "selfsubjectreview-status", "configmap-binary"]


def fixture(name: str) -> tuple[bytes, dict[str, Any]]:
    expected = json.loads((FIXTURES / f"{name}.json").read_text())
    return (FIXTURES / f"{name}.pb").read_bytes(), expected


@pytest.mark.parametrize("name", [*CAPTURED, *BUILT])
def test_fixtures_decode_to_their_json(name: str) -> None:
    body, expected = fixture(name)
    assert decode(body) == expected


# --------------------------------------------------------------------------- body builders


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return key(number, 2) + varint(len(raw)) + raw


def num(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def envelope(api_version: str, kind: str, raw: bytes, encoding: str = "") -> bytes:
    type_meta = ld(1, api_version) + ld(2, kind)
    return b"k8s\x00" + ld(1, type_meta) + ld(2, raw) + ld(3, encoding) + ld(4, "")


def name_meta(name: str) -> bytes:
    return ld(1, ld(1, name))


# --------------------------------------------------------------------------- what kubectl sends


def test_a_captured_deployment_leaves_out_what_json_would_leave_out() -> None:
    body, _ = fixture("deployment")
    obj = decode(body)
    # On the wire: metadata.generation 0, empty creationTimestamp, status with
    # zero counts, stdin/tty false, hostPort 0, an empty strategy and resources.
    assert "generation" not in obj["metadata"]
    assert "creationTimestamp" not in obj["metadata"]
    assert "status" not in obj
    assert "strategy" not in obj["spec"]
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container == {"name": "nginx", "image": "nginx", "command": ["sleep", "1"],
                         "ports": [{"containerPort": 80}]}


def test_fields_without_omitempty_keep_their_zero_values() -> None:
    obj = decode(fixture("selfsubjectaccessreview")[0])
    assert obj["status"] == {"allowed": False}  # `allowed` has no omitempty; `denied` has
    token = decode(fixture("tokenrequest-bound")[0])
    assert token["spec"]["expirationSeconds"] == 600
    assert token["status"] == {"token": ""}


def test_pointer_fields_keep_zero_values_and_empty_objects() -> None:
    obj = decode(fixture("deployment-full")[0])
    spec = obj["spec"]
    assert spec["replicas"] == 0
    assert spec["revisionHistoryLimit"] == 0
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": "25%"}
    pod = spec["template"]["spec"]
    assert pod["volumes"][1] == {"name": "ed", "emptyDir": {}}
    assert pod["terminationGracePeriodSeconds"] == 0
    assert pod["automountServiceAccountToken"] is False
    assert pod["activeDeadlineSeconds"] == -1
    assert pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "namespaceSelector"] == {}
    main = pod["containers"][0]
    assert main["ports"][1] == {"containerPort": 0}
    assert main["env"][1] == {"name": "EMPTY"}
    assert main["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["supplementalGroups"] == [4000, 5000]
    assert obj["metadata"]["labels"] == {"app": "rich", "tier": ""}


def test_special_types_take_their_kubernetes_json_form() -> None:
    obj = decode(fixture("deployment-full")[0])
    meta = obj["metadata"]
    assert meta["creationTimestamp"] == "2026-11-26T10:00:00Z"
    assert meta["managedFields"][0]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    pod = obj["spec"]["template"]["spec"]
    probe = pod["containers"][0]["livenessProbe"]
    assert probe["httpGet"]["port"] == 8080
    assert pod["containers"][0]["readinessProbe"]["tcpSocket"]["port"] == "http"
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "500m", "memory": "128Mi"}
    lease = decode(fixture("lease")[0])["spec"]
    assert lease["acquireTime"] == "2026-11-26T10:00:00.123456Z"
    assert lease["renewTime"] == "2026-11-26T10:05:00.000001Z"
    cm = decode(fixture("configmap-binary")[0])
    assert cm["binaryData"] == {"bin": "AAEC/w=="}
    secret = decode(fixture("secret-generic")[0])
    assert secret["data"] == {"a": "Yg=="}
    user = decode(fixture("selfsubjectreview-status")[0])["status"]["userInfo"]
    assert user["extra"] == {"scopes": ["a", "b"], "empty": []}


def test_inlined_structs_merge_into_their_parent() -> None:
    pod = decode(fixture("deployment-full")[0])["spec"]["template"]["spec"]
    assert pod["volumes"][4]["configMap"]["name"] == "cfg"  # LocalObjectReference
    assert pod["containers"][0]["env"][4]["valueFrom"]["configMapKeyRef"] == {
        "name": "cfg", "key": "k", "optional": True}
    assert pod["ephemeralContainers"][0] == {"name": "dbg", "image": "busybox",
                                             "targetContainerName": "main", "stdin": True}


# --------------------------------------------------------------------------- wire details


def test_negative_numbers_use_ten_byte_varints() -> None:
    spec = num(1, -1)  # DeploymentSpec.replicas (int32) as its 64-bit two's complement
    obj = decode(envelope("apps/v1", "Deployment", name_meta("d") + ld(2, spec)))
    assert obj["spec"] == {"replicas": -1}
    assert len(varint(-1)) == 10


def test_packed_and_unpacked_repeated_numbers() -> None:
    groups = [1, 300, 2**40]
    packed = ld(4, b"".join(varint(g) for g in groups))
    unpacked = b"".join(num(4, g) for g in groups)
    for security in (packed, unpacked):
        pod = ld(2, ld(14, security))  # Pod.spec.securityContext.supplementalGroups
        obj = decode(envelope("v1", "Pod", pod))
        assert obj["spec"]["securityContext"]["supplementalGroups"] == groups


def test_map_entries_without_a_value_hold_the_empty_value() -> None:
    meta = ld(1, ld(11, ld(1, "only-key")) + ld(11, ld(1, "k") + ld(2, "v")) + ld(11, ld(1, "k") + ld(2, "w")))
    obj = decode(envelope("v1", "ConfigMap", meta))
    assert obj["metadata"] == {"labels": {"only-key": "", "k": "w"}}


def test_a_message_sent_in_pieces_is_merged_and_the_last_scalar_wins() -> None:
    body = ld(1, ld(1, "first") + ld(3, "ns")) + ld(1, ld(1, "second"))
    obj = decode(envelope("v1", "Namespace", body))
    assert obj["metadata"] == {"name": "second", "namespace": "ns"}


def test_zero_times_and_zero_int_or_string_are_left_out() -> None:
    port = num(3, 80) + ld(4, num(1, 0) + num(2, 0) + ld(3, ""))  # targetPort: int 0
    spec = ld(1, port)
    meta = ld(1, "s") + ld(8, b"")  # creationTimestamp: the zero time
    obj = decode(envelope("v1", "Service", ld(1, meta) + ld(2, spec)))
    assert obj == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                   "spec": {"ports": [{"port": 80}]}}


@pytest.mark.parametrize(("seconds", "nanos", "time", "micro"), [
    (1_795_687_200, 0, "2026-11-26T10:00:00Z", "2026-11-26T10:00:00.000000Z"),
    (1_795_687_200, 999_999_999, "2026-11-26T10:00:00Z", "2026-11-26T10:00:00.999999Z"),
    (-62_135_596_800, 0, "0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
    (-1, 0, "1969-12-31T23:59:59Z", "1969-12-31T23:59:59.000000Z"),
    (0, 1_000, "1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000001Z"),
])
def test_times_are_rfc3339_in_utc(seconds: int, nanos: int, time: str, micro: str) -> None:
    stamp = num(1, seconds) + num(2, nanos)
    event = ld(1, ld(1, "e") + ld(8, stamp)) + ld(6, stamp) + ld(10, stamp)
    obj = decode(envelope("v1", "Event", event))
    assert obj["metadata"]["creationTimestamp"] == time
    assert obj["firstTimestamp"] == time
    assert obj["eventTime"] == micro


def test_a_time_out_of_range() -> None:
    event = ld(6, num(1, 2**62))
    assert "Time seconds 4611686018427387904 is out of range" in error(
        envelope("v1", "Event", event))


def test_invalid_utf8_is_replaced_as_json_would() -> None:
    obj = decode(envelope("v1", "Namespace", name_meta("") + ld(1, ld(1, b"a\xffb"))))
    assert obj["metadata"]["name"] == "a\ufffdb"


def test_raw_extensions_hold_json_or_a_nested_protobuf_object() -> None:
    data = json.dumps({"spec": {"replicas": 3}}).encode()
    body = name_meta("r1") + ld(2, ld(1, data)) + num(3, 2)
    obj = decode(envelope("apps/v1", "ControllerRevision", body))
    assert obj == {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                   "metadata": {"name": "r1"}, "data": {"spec": {"replicas": 3}}, "revision": 2}
    nested = envelope("v1", "Namespace", name_meta("inner"))
    obj = decode(envelope("apps/v1", "ControllerRevision", ld(2, ld(1, nested)) + num(3, 0)))
    assert obj["data"] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "inner"}}
    assert obj["revision"] == 0  # no omitempty on revision


@pytest.mark.parametrize("api_version", ["v1", "apps/v1", "meta.k8s.io/v1"])
def test_delete_options_decode_under_any_group_version(api_version: str) -> None:
    body = num(1, 0) + ld(2, ld(1, "uid-1")) + ld(4, "Foreground") + ld(5, "All")
    assert decode(envelope(api_version, "DeleteOptions", body)) == {
        "apiVersion": api_version, "kind": "DeleteOptions", "gracePeriodSeconds": 0,
        "preconditions": {"uid": "uid-1"}, "propagationPolicy": "Foreground", "dryRun": ["All"]}


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (1, "1ns"), (1_500, "1.5µs"), (500_000_000, "500ms"), (10_000_000_000, "10s"),
    (1_500_000_000, "1.5s"), (90_000_000_000, "1m30s"), (3_600_000_000_000, "1h0m0s"),
    (7_384_005_000_000, "2h3m4.005s"), (-90_000_000_000, "-1m30s"),
])
def test_durations_are_written_as_go_writes_them(ns: int, text: str) -> None:
    assert _go_duration(ns) == text


# --------------------------------------------------------------------------- errors


def error(body: bytes) -> str:
    with pytest.raises(ProtobufError) as e:
        decode(body)
    return str(e.value)


def test_bad_magic() -> None:
    assert "must start with the 4 bytes 'k8s\\x00'" in error(b'{"kind": "Namespace"}')
    assert "must start with" in error(b"")


def test_truncated_varint() -> None:
    msg = error(b"k8s\x00" + ld(1, ld(1, "v1") + ld(2, "Pod")) + key(2, 2) + b"\x80\x80")
    assert "truncated varint" in msg and "length of field 2" in msg


def test_truncated_length_delimited_field() -> None:
    msg = error(b"k8s\x00" + key(1, 2) + varint(5) + b"ab")
    assert "field 1 is truncated: it says it is 5 bytes long but only 2 remain" in msg


def test_truncated_nested_field_names_where_it_is() -> None:
    msg = error(envelope("v1", "Namespace", key(1, 2) + varint(9) + ld(1, "x")))
    assert "Namespace (core.Namespace): field 1 is truncated" in msg


def test_overlong_varint() -> None:
    assert "longer than 10 bytes" in error(b"k8s\x00" + key(2, 0) + b"\xff" * 11 + b"\x01")


def test_truncated_fixed_width_values() -> None:
    assert "64-bit value needs 8 bytes but only 3 remain" in error(b"k8s\x00" + key(7, 1) + b"abc")
    assert "32-bit value needs 4 bytes but only 1 remain" in error(b"k8s\x00" + key(7, 5) + b"a")


def test_envelope_fields_are_checked() -> None:
    assert "runtime.Unknown: field 9 is not valid (it has fields 1, 2, 3, 4)" in error(
        b"k8s\x00" + ld(9, "x"))
    assert "field 1 of runtime.Unknown was sent as a varint value" in error(b"k8s\x00" + num(1, 1))
    assert "runtime.Unknown typeMeta: field 3 is not valid" in error(b"k8s\x00" + ld(1, ld(3, "x")))


def test_group_wire_types_are_refused() -> None:
    assert "wire type 3 (start-group)" in error(b"k8s\x00" + key(1, 3))


def test_unknown_kind_asks_for_json() -> None:
    msg = error(envelope("batch/v1", "CronJob", b""))
    assert msg == ("CronJob (batch/v1) cannot be sent as protobuf to this server; "
                   "send it as JSON (Content-Type: application/json)")


def test_a_body_without_a_kind() -> None:
    assert "does not say its kind" in error(b"k8s\x00" + ld(1, ld(1, "v1")))


def test_content_encoding_is_refused() -> None:
    assert "contentEncoding 'gzip'" in error(envelope("v1", "Namespace", b"", encoding="gzip"))


def test_unknown_field_names_the_message_and_the_field() -> None:
    container = ld(1, "c") + ld(99, "x")
    body = ld(2, ld(2, container))  # Pod.spec.containers[0] with field 99
    msg = error(envelope("v1", "Pod", body))
    assert msg == ("Pod.spec.containers[0]: field 99 of message core.Container is not known to "
                   "this server's protobuf decoder; send the object as JSON")


def test_a_message_missing_from_the_table_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {k: v for k, v in messages().items() if k != "core.PodSpec"}
    monkeypatch.setattr(protobuf, "messages", lambda: table)
    msg = error(envelope("v1", "Pod", ld(2, ld(2, ld(1, "c")))))
    assert msg == ("Pod.spec: message core.PodSpec is not known to this server's protobuf "
                   "decoder; send the object as JSON")


def test_a_wire_type_that_does_not_fit_the_field() -> None:
    msg = error(envelope("v1", "Namespace", ld(1, num(1, 5))))
    assert msg == "Namespace.metadata.name was sent as a varint value, expected length-delimited"
    msg = error(envelope("apps/v1", "Deployment", ld(2, ld(1, "two"))))
    assert "Deployment.spec.replicas was sent as a length-delimited value, expected varint" in msg


def test_special_types_refuse_unknown_fields_and_bad_json() -> None:
    meta = ld(8, num(3, 1))  # creationTimestamp with a field 3
    assert "field 3 of Time is not known" in error(envelope("v1", "Namespace", ld(1, meta)))
    entry = ld(17, ld(7, ld(1, "{not json")))  # managedFields[0].fieldsV1
    assert "FieldsV1 does not hold valid JSON" in error(envelope("v1", "Namespace", ld(1, entry)))


def test_map_entries_refuse_other_fields() -> None:
    meta = ld(11, ld(1, "k") + ld(3, "x"))
    assert "map entry field 3 is not valid" in error(envelope("v1", "Namespace", ld(1, meta)))


# --------------------------------------------------------------------------- the table


def test_every_message_the_table_refers_to_is_in_the_table() -> None:
    table = messages()
    for name, fields in table.items():
        for number, field in fields.items():
            if field.kind == "message":
                assert field.message in table, f"{name} field {number} refers to {field.message}"
    for kind, name in KINDS.items():
        assert name in table, kind


def test_ephemeral_containers_share_the_container_fields() -> None:
    assert messages()["core.EphemeralContainerCommon"] == messages()["core.Container"]


def test_field_syntax() -> None:
    fields = messages()["core.PodSpec"]
    assert fields[1] == protobuf_fields.Field("volumes", "message", "core.Volume", repeated=True,
                                              map=False, pointer=False, always=False)
    assert fields[7].map and fields[7].kind == "string"
    assert fields[21].pointer and fields[21].kind == "bool"
    assert messages()["core.ContainerPort"][3].always
    assert messages()["core.Volume"][2].inline
