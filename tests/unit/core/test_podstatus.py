"""Pod runner decisions: back-off, probe accounting, container transitions, Pod status, environment."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from isthmus.core import podstatus as ps

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pod(*containers: Mapping[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "namespace": "emojivoto", "uid": "u-1",
                     "labels": {"app": "web"}, "annotations": {"note": "hi"}},
        "spec": {"containers": list(containers), "nodeName": "node-1",
                 "serviceAccountName": "web", **spec},
    }


# ---------------------------------------------------------------------------- back-off


def test_backoff_first_restart_is_immediate_then_doubles_to_the_cap() -> None:
    b = ps.Backoff(base=10, cap=40)
    delays = []
    entry = None
    t = T0
    for _ in range(6):
        delay, entry = b.next_restart(entry, t)
        delays.append(delay)
        t = t + timedelta(seconds=delay + 1)  # the container crashes a second after each restart
    assert delays == [0, 10, 20, 40, 40, 40]


def test_backoff_resets_after_running_long_enough() -> None:
    b = ps.Backoff(base=10, cap=300, reset_after=600)
    _, entry = b.next_restart(None, T0)
    delay, entry = b.next_restart(entry, at(5))
    assert delay == 10
    delay, _ = b.next_restart(entry, at(15 + 599))
    assert delay == 20
    delay, _ = b.next_restart(entry, at(15 + 601))
    assert delay == 0


def test_backoff_rejects_a_cap_below_the_base() -> None:
    with pytest.raises(ValueError, match="base <= cap"):
        ps.Backoff(base=10, cap=5)


# ---------------------------------------------------------------------------- probes


def test_parse_probes_fills_defaults_and_resolves_named_ports() -> None:
    c = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}],
         "readinessProbe": {"httpGet": {"port": "http", "path": "ready"}, "successThreshold": 2},
         "livenessProbe": {"tcpSocket": {"port": 8081}, "successThreshold": 5, "periodSeconds": 3},
         "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30}}
    probes = ps.parse_probes(c, pod_ip="127.1.64.1")
    r = probes["readiness"]
    assert r.action == ps.HTTPGetAction("127.1.64.1", 8080, "/ready", "HTTP")
    assert (r.period, r.timeout, r.success_threshold, r.failure_threshold) == (10, 1, 2, 3)
    assert probes["liveness"].action == ps.TCPSocketAction("127.1.64.1", 8081)
    assert probes["liveness"].success_threshold == 1  # must be 1 for liveness and startup
    assert probes["startup"].action == ps.ExecAction(("true",))
    assert probes["startup"].failure_threshold == 30


def test_a_probe_on_an_unknown_port_name_always_fails_with_the_reason() -> None:
    c = {"name": "web", "readinessProbe": {"httpGet": {"port": "admin"}}}
    action = ps.parse_probes(c, pod_ip="127.0.0.1")["readiness"].action
    assert isinstance(action, ps.InvalidAction)
    assert "admin" in action.message


def test_readiness_needs_success_threshold_successes_and_failure_threshold_failures() -> None:
    probe = ps.Probe("readiness", ps.TCPSocketAction("127.0.0.1", 1), success_threshold=2,
                     failure_threshold=3)
    s = ps.initial_probe_state("readiness")
    assert s.value is False
    s = ps.record_probe(probe, s, True)
    assert s.value is False
    s = ps.record_probe(probe, s, True)
    assert s.value is True
    s = ps.record_probe(probe, s, False, "refused")
    s = ps.record_probe(probe, s, False, "refused")
    assert s.value is True and s.message == "refused"
    s = ps.record_probe(probe, s, True)  # a success breaks the run of failures
    s = ps.record_probe(probe, s, False, "x")
    s = ps.record_probe(probe, s, False, "x")
    assert s.value is True
    s = ps.record_probe(probe, s, False, "x")
    assert s.value is False
    assert not ps.should_kill(probe, s)  # readiness never kills


def test_liveness_starts_alive_and_kills_after_failure_threshold() -> None:
    probe = ps.Probe("liveness", ps.ExecAction(("false",)), failure_threshold=2)
    s = ps.initial_probe_state("liveness")
    assert s.value is True
    s = ps.record_probe(probe, s, False, "boom")
    assert not ps.should_kill(probe, s)
    s = ps.record_probe(probe, s, False, "boom")
    assert ps.should_kill(probe, s)


def test_startup_probe_gates_the_others_and_initial_delay_then_period() -> None:
    assert ps.probe_active("startup", started=False)
    assert not ps.probe_active("startup", started=True)
    assert not ps.probe_active("readiness", started=False)
    assert ps.probe_active("liveness", started=True)
    probe = ps.Probe("readiness", ps.TCPSocketAction("h", 1), initial_delay=5, period=2)
    assert ps.probe_delay(probe, started_at=T0, last_at=None, now=at(1)) == 4
    assert ps.probe_delay(probe, started_at=T0, last_at=at(6), now=at(7), passed=True) == 1
    assert ps.probe_delay(probe, started_at=T0, last_at=at(6), now=at(9), passed=True) == 0
    # Until it first passes, a young container's readiness is probed every 0.2 s.
    assert ps.probe_delay(probe, started_at=T0, last_at=at(6), now=at(6), passed=False) == 0.2
    # ...but only during its first 10 s; liveness keeps its period.
    assert ps.probe_delay(probe, started_at=T0, last_at=at(11), now=at(11), passed=False) == 2
    liveness = ps.Probe("liveness", ps.TCPSocketAction("h", 1), initial_delay=0, period=2)
    assert ps.probe_delay(liveness, started_at=T0, last_at=at(1), now=at(1), passed=False) == 2


# ---------------------------------------------------------------------------- containers


def test_container_transitions_through_a_crash_loop() -> None:
    backoff = ps.Backoff(base=10, cap=300)
    rec = ps.attempt(ps.ContainerRecord("web", "img"))
    rec = ps.started(rec, now=T0, container_id="isthmus://1", probes={})
    assert rec.ready and rec.started and rec.restart_count == 0
    term = ps.exited(rec, returncode=3, now=at(1))
    assert (term.exit_code, term.reason, term.started_at) == (3, "Error", T0)
    rec, delay = ps.plan_restart(rec, term, policy="Always", backoff=backoff, pod_ref="web-1_ns(u)")
    assert delay == 0 and rec.last == term and not rec.ready
    rec = ps.started(ps.attempt(rec), now=at(1), container_id="isthmus://2", probes={})
    assert rec.restart_count == 1
    term = ps.exited(rec, returncode=-9, now=at(2))
    assert (term.exit_code, term.signal) == (137, 9)
    rec, delay = ps.plan_restart(rec, term, policy="Always", backoff=backoff, pod_ref="web-1_ns(u)")
    assert delay == 10
    assert rec.state == ps.Waiting("CrashLoopBackOff",
                                   "back-off 10s restarting failed container=web pod=web-1_ns(u)")


def test_restart_policies() -> None:
    assert ps.should_restart("Always", 0)
    assert not ps.should_restart("OnFailure", 0)
    assert ps.should_restart("OnFailure", 1)
    assert not ps.should_restart("Never", 1)
    assert ps.should_restart("OnFailure", 0, force=True)  # a liveness kill restarts
    assert not ps.should_restart("Never", 0, force=True)
    rec = ps.attempt(ps.ContainerRecord("job"))
    rec = ps.started(rec, now=T0, container_id="", probes={})
    term = ps.exited(rec, returncode=0, now=at(1))
    done, delay = ps.plan_restart(rec, term, policy="OnFailure", backoff=ps.Backoff(), pod_ref="p")
    assert delay is None and done.state == term and term.reason == "Completed"


def test_a_start_error_shows_run_container_error_then_crash_loop() -> None:
    backoff = ps.Backoff(base=1, cap=2)
    rec = ps.attempt(ps.ContainerRecord("web"))
    term = ps.start_error('exec: "nope": executable file not found in $PATH', now=T0)
    rec, delay = ps.plan_restart(rec, term, policy="Always", backoff=backoff, pod_ref="p")
    assert delay == 0
    assert rec.state == ps.Waiting("RunContainerError", 'exec: "nope": executable file not found in $PATH')
    rec, delay = ps.plan_restart(ps.attempt(rec), ps.start_error("x", now=at(0.1)), policy="Always",
                                 backoff=backoff, pod_ref="p")
    assert delay == 1 and isinstance(rec.state, ps.Waiting) and rec.state.reason == "CrashLoopBackOff"
    assert rec.restart_count == 1 and rec.last is not None and rec.last.reason == "StartError"


def test_ready_follows_startup_and_readiness_probes() -> None:
    probes = {k: ps.Probe(k, ps.ExecAction(("true",))) for k in ("startup", "readiness")}
    rec = ps.started(ps.attempt(ps.ContainerRecord("web")), now=T0, container_id="", probes=probes)
    assert not rec.started and not rec.ready
    states = {"startup": ps.ProbeState(True), "readiness": ps.ProbeState(False)}
    rec = ps.refresh_ready(rec, probes=probes, states=states)
    assert rec.started and not rec.ready
    rec = ps.refresh_ready(rec, probes=probes, states={**states, "readiness": ps.ProbeState(True)})
    assert rec.ready


# ---------------------------------------------------------------------------- pod status


def running(name: str, ready: bool = True) -> ps.ContainerRecord:
    return ps.ContainerRecord(name, "img", ps.Running(T0), attempts=1, ready=ready, started=True)


def term(name: str, code: int) -> ps.ContainerRecord:
    return ps.ContainerRecord(name, "img", ps.Terminated(code, "Error" if code else "Completed", T0, at(1)),
                              attempts=1)


@pytest.mark.parametrize(("policy", "records", "phase"), [
    ("Always", [ps.ContainerRecord("a")], "Pending"),
    ("Always", [running("a"), ps.ContainerRecord("b")], "Pending"),
    ("Always", [running("a"), term("b", 1)], "Running"),
    ("Always", [term("a", 0)], "Running"),
    ("OnFailure", [term("a", 0), term("b", 0)], "Succeeded"),
    ("OnFailure", [term("a", 0), term("b", 1)], "Running"),
    ("Never", [term("a", 0), term("b", 1)], "Failed"),
    ("Never", [term("a", 0)], "Succeeded"),
    ("Always", [ps.ContainerRecord("a", state=ps.Waiting("CrashLoopBackOff"),
                                   last=ps.Terminated(1, "Error", T0, at(1)))], "Running"),
])
def test_phase(policy: str, records: list[ps.ContainerRecord], phase: str) -> None:
    assert ps.pod_phase(pod(restartPolicy=policy), records) == phase


def test_status_of_a_running_ready_pod() -> None:
    p = pod({"name": "web"}, {"name": "proxy"})
    status = ps.build_pod_status(p, [running("web"), running("proxy")], pod_ip="127.1.64.1",
                                 host_ip="127.1.0.11", start_time=T0, now=at(3))
    assert status["phase"] == "Running"
    assert [c["type"] for c in status["conditions"]] == [
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    assert all(c["status"] == "True" and c["lastTransitionTime"] == "2026-11-26T10:00:03Z"
               for c in status["conditions"])
    assert status["podIP"] == "127.1.64.1" and status["podIPs"] == [{"ip": "127.1.64.1"}]
    assert status["hostIP"] == "127.1.0.11" and status["startTime"] == "2026-11-26T10:00:00Z"
    assert [c["name"] for c in status["containerStatuses"]] == ["proxy", "web"]
    web = status["containerStatuses"][1]
    assert web == {"name": "web", "image": "img", "imageID": "", "ready": True, "started": True,
                   "restartCount": 0, "state": {"running": {"startedAt": "2026-11-26T10:00:00Z"}},
                   "lastState": {}}


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    p = pod({"name": "web"}, {"name": "proxy"})
    first = ps.build_pod_status(p, [running("web", ready=False), running("proxy")], pod_ip="i",
                                host_ip="h", start_time=T0, now=at(1))
    ready = {c["type"]: c for c in first["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["message"] == "containers with unready status: [web]"
    same = ps.build_pod_status(p, [running("web", ready=False), running("proxy")], pod_ip="i",
                               host_ip="h", start_time=T0, now=at(5), previous=first)
    assert same == first
    later = ps.build_pod_status(p, [running("web"), running("proxy")], pod_ip="i", host_ip="h",
                                start_time=T0, now=at(9), previous=first)
    conds = {c["type"]: c for c in later["conditions"]}
    assert conds["Ready"]["lastTransitionTime"] == "2026-11-26T10:00:09Z"
    assert conds["PodScheduled"]["lastTransitionTime"] == "2026-11-26T10:00:01Z"


def test_a_pod_stopped_with_its_node_shows_nothing_ready_or_running() -> None:
    p = pod({"name": "web"}, {"name": "proxy"})
    web = dataclasses.replace(running("web"), container_id="isthmus://41")
    before = ps.build_pod_status(p, [web, running("proxy")], pod_ip="127.1.64.1", host_ip="h",
                                 start_time=T0, now=at(3))
    after = ps.stopped_with_node(before, now=at(60))
    assert after is not None
    conds = {c["type"]: c for c in after["conditions"]}
    for t in ("Ready", "ContainersReady"):
        assert conds[t]["status"] == "False" and conds[t]["reason"] == "NodeNotReady"
        assert conds[t]["lastTransitionTime"] == "2026-11-26T10:01:00Z"
    assert conds["PodScheduled"] == {c["type"]: c for c in before["conditions"]}["PodScheduled"]
    statuses = {c["name"]: c for c in after["containerStatuses"]}
    assert statuses["web"]["ready"] is False and statuses["web"]["started"] is False
    assert statuses["web"]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert statuses["web"]["lastState"] == {"terminated": {
        "exitCode": 255, "reason": "Unknown", "startedAt": "2026-11-26T10:00:00Z",
        "finishedAt": "2026-11-26T10:01:00Z", "containerID": "isthmus://41"}}
    assert after["podIP"] == "127.1.64.1" and after["phase"] == "Running"
    assert before["containerStatuses"][1]["ready"] is True  # the argument is left as it was
    assert ps.stopped_with_node(after, now=at(90)) is None  # nothing more to say


def test_a_pod_that_never_ran_is_left_as_it_is() -> None:
    p = pod({"name": "web"})
    pending = ps.build_pod_status(p, [ps.ContainerRecord("web", "img")], pod_ip="i", host_ip="h",
                                  start_time=T0, now=at(1))
    assert ps.stopped_with_node(pending, now=at(5)) is None
    assert ps.stopped_with_node({}, now=at(5)) is None


def test_completed_pod_and_terminated_state_fields() -> None:
    p = pod({"name": "job"}, restartPolicy="Never")
    rec = ps.ContainerRecord("job", "img", ps.Terminated(0, "Completed", T0, at(2), container_id="isthmus://7"),
                             attempts=1, container_id="isthmus://7")
    status = ps.build_pod_status(p, [rec], pod_ip="i", host_ip="h", start_time=T0, now=at(2),
                                 previous={"qosClass": "BestEffort",
                                           "conditions": [{"type": "example.com/gate", "status": "True"}]})
    assert status["phase"] == "Succeeded" and status["qosClass"] == "BestEffort"
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["reason"] == "PodCompleted"
    assert conds["example.com/gate"]["status"] == "True"
    assert status["containerStatuses"][0]["state"] == {"terminated": {
        "exitCode": 0, "reason": "Completed", "startedAt": "2026-11-26T10:00:00Z",
        "finishedAt": "2026-11-26T10:00:02Z", "containerID": "isthmus://7"}}


def test_readiness_gates() -> None:
    p = pod({"name": "web"}, readinessGates=[{"conditionType": "example.com/lb"}])
    status = ps.build_pod_status(p, [running("web")], pod_ip="i", host_ip="h", start_time=T0, now=T0)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["ContainersReady"]["status"] == "True"
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ReadinessGatesNotReady"


# ---------------------------------------------------------------------------- environment


@pytest.mark.parametrize(("text", "expected"), [
    ("$(A)-$(B)", "1-2"),
    ("$$(A)", "$(A)"),
    ("$$$(A)", "$1"),
    ("$(UNKNOWN)", "$(UNKNOWN)"),
    ("$(A", "$(A"),
    ("a$b", "a$b"),
    ("tail$", "tail$"),
    ("$()", "$()"),
    ("$(A)$(A)", "11"),
])
def test_expand(text: str, expected: str) -> None:
    assert ps.expand(text, {"A": "1"}, {"B": "2", "A": "ignored"}) == expected


CONFIG: dict[tuple[str, str], dict[str, str]] = {
    ("ConfigMap", "settings"): {"LEVEL": "debug", "MODE": "fast", "bad=key": "x"},
    ("Secret", "creds"): {"password": "s3cret"},
}


def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
    assert namespace == "emojivoto"
    return CONFIG.get((kind, name))


def test_resolve_env_sources_order_and_expansion() -> None:
    c = {"name": "web", "resources": {"limits": {"memory": "128Mi", "cpu": "250m"}},
         "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
         "env": [
             {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
             {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
             {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
             {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
             {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
             {"name": "MISSING", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['nope']"}}},
             {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
             {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
             {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
             {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
             {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
             {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
             {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                   "divisor": "1Mi"}}},
             {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu",
                                                                  "divisor": "1m"}}},
             {"name": "URL", "value": "http://$(IP):$(PORT)/$(NAME)?l=$(CFG_LEVEL)&x=$(LATER)"},
             {"name": "LATER", "value": "later"},
             {"name": "PATH", "value": "/opt/bin:$(PATH)"},
         ]}
    env = ps.resolve_env(pod(c), c, pod_ip="127.1.64.9", host_ip="127.1.0.11", lookup=lookup,
                         service_env={"PORT": "8080", "PATH": "/usr/bin", "NAME": "service-loses"})
    assert env["NAME"] == "web-1" and env["NS"] == "emojivoto" and env["UID"] == "u-1"
    assert (env["APP"], env["NOTE"], env["MISSING"]) == ("web", "hi", "")
    assert (env["NODE"], env["SA"], env["IP"], env["HOST"]) == ("node-1", "web", "127.1.64.9", "127.1.0.11")
    assert env["CFG_LEVEL"] == "debug" and env["CFG_MODE"] == "fast" and "CFG_bad=key" not in env
    assert env["LEVEL"] == "debug" and env["PASSWORD"] == "s3cret"
    assert env["MEM_MI"] == "128" and env["CPU_M"] == "250"
    assert env["URL"] == "http://127.1.64.9:8080/web-1?l=debug&x=$(LATER)"
    assert env["PATH"] == "/opt/bin:/usr/bin" and env["PORT"] == "8080"


def test_resolve_env_missing_references() -> None:
    def resolve(var: dict[str, Any]) -> dict[str, str]:
        c = {"name": "web", "env": [var]}
        return ps.resolve_env(pod(c), c, pod_ip="i", host_ip="h", lookup=lookup)

    with pytest.raises(ps.ContainerConfigError, match='configmap "nope" not found'):
        resolve({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}})
    with pytest.raises(ps.ContainerConfigError, match="couldn't find key k in Secret emojivoto/creds"):
        resolve({"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}})
    with pytest.raises(ps.ContainerConfigError, match="unsupported fieldRef"):
        resolve({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}})
    assert "X" not in resolve({"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k",
                                                                             "optional": True}}})
    c = {"name": "web", "envFrom": [{"secretRef": {"name": "nope"}}]}
    with pytest.raises(ps.ContainerConfigError, match='secret "nope" not found'):
        ps.resolve_env(pod(c), c, pod_ip="i", host_ip="h", lookup=lookup)


def test_referenced_objects() -> None:
    c = {"envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "s"}}],
         "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "a", "key": "k"}}},
                 {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}},
                 {"name": "Z", "value": "v"}]}
    assert ps.referenced_objects(c) == [("ConfigMap", "a"), ("Secret", "s"), ("Secret", "t")]


def test_expand_command_and_isthmus_variables() -> None:
    env = {"POD_IP": "127.1.64.2", "PORT": "80"}
    c = {"command": ["serve", "--addr=$(POD_IP):$(PORT)"], "args": ["$$(PORT)", "$(NOPE)"]}
    assert ps.expand_command(c, env) == ["serve", "--addr=127.1.64.2:80", "$(PORT)", "$(NOPE)"]
    with pytest.raises(ps.ContainerStartError, match="the container has no command"):
        ps.expand_command({"args": ["x"]}, env)
    assert ps.isthmus_pod_env(pod(), "127.1.64.2") == {
        "POD_IP": "127.1.64.2", "POD_NAME": "web-1", "POD_NAMESPACE": "emojivoto", "HOSTNAME": "web-1"}
