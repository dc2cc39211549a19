"""`isthmus inject` as a user runs it: manifests in (stdin or files), annotated manifests out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ISTHMUS = str(Path(sys.executable).parent / "isthmus")
EMOJIVOTO = Path(__file__).resolve().parents[3] / "deploy" / "emojivoto.yml"


def inject(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, "inject", *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_emojivoto_from_stdin_gets_the_annotation_on_every_template_and_nothing_else() -> None:
    original = docs(EMOJIVOTO.read_text())
    out = inject(stdin=EMOJIVOTO.read_text())
    assert out.returncode == 0, out.stderr
    result = docs(out.stdout)
    assert len(result) == len(original)
    for before, after in zip(original, result, strict=True):
        if before["kind"] == "Deployment":
            annotations = after["spec"]["template"]["metadata"].pop("annotations")
            assert annotations == {"isthmus.io/inject": "enabled"}
        elif before["kind"] == "Namespace":
            assert after["metadata"].pop("annotations") == {"isthmus.io/inject": "enabled"}
        assert after == before
    lines = out.stderr.splitlines()
    assert 'deployment "web" injected' in lines and 'deployment "vote-bot" injected' in lines
    assert 'namespace "emojivoto" injected' in lines and 'service "web-svc" skipped' in lines


def test_json_input_and_file_arguments(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    out = inject(stdin=json.dumps(pod))
    assert out.returncode == 0, out.stderr
    assert docs(out.stdout)[0]["metadata"]["annotations"] == {"isthmus.io/inject": "enabled"}
    (tmp_path / "a.yml").write_text(yaml.safe_dump(pod))
    (tmp_path / "b.json").write_text(json.dumps({**pod, "metadata": {"name": "q"}}))
    out = inject("a.yml", "b.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [d["metadata"]["name"] for d in docs(out.stdout)] == ["p", "q"]
    assert out.stderr.splitlines() == ['pod "p" injected', 'pod "q" injected']


@pytest.mark.parametrize(("stdin", "message"), [
    ("kind: Deployment\n  bad: [indent\n", "stdin is not valid YAML or JSON at line"),
    ("", "stdin holds no manifests; give Kubernetes objects in YAML or JSON"),
    ("---\n---\n", "stdin holds no manifests"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\n- just\n- a list\n",
     "stdin: document 2 is not a Kubernetes object (a mapping with apiVersion and kind), but a list"),
    ("metadata: {name: x}\n", "stdin: document 1 is not a Kubernetes object: it needs apiVersion and kind"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n",
     "stdin: document 1 (Deployment web) has no spec.template, so it has no pod template to annotate"),
])
def test_bad_input_is_refused_and_nothing_is_printed(stdin: str, message: str) -> None:
    out = inject(stdin=stdin)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith(f"error: {message}"), out.stderr
    assert out.stderr.count("\n") == 1


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ok.yml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    out = inject("ok.yml", "nope.yml", cwd=tmp_path)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == "error: nope.yml does not exist\n"
