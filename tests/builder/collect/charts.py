"""Small real helm charts for the tests (written as files, rendered by the real helm)."""

from __future__ import annotations

from pathlib import Path

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
spec:
  replicas: {{ .Values.replicas | default 1 }}
  selector: {matchLabels: {app: {{ .Chart.Name }}}}
  template:
    metadata: {labels: {app: {{ .Chart.Name }}}}
    spec:
      containers:
      - name: main
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"""
TEST_HOOK = """apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations: {"helm.sh/hook": test}
spec:
  containers: [{name: t, image: "test/only:1"}]
"""


def write_chart(root: Path, name: str, repository: str, tag: str, *,
                annotation: list[str] | None = None, test_hook: bool = False,
                dependencies: list[str] | None = None) -> Path:
    """A chart directory ``root`` with one Deployment of ``repository:tag`` (from values)."""
    (root / "templates").mkdir(parents=True, exist_ok=True)
    chart = f"apiVersion: v2\nname: {name}\nversion: 0.1.0\n"
    if annotation:
        chart += "annotations:\n  helm.sh/images: |\n" + "".join(
            f"    - name: x{n}\n      image: {image}\n" for n, image in enumerate(annotation))
    if dependencies:
        chart += "dependencies:\n" + "".join(
            f"  - name: {d}\n    version: 0.1.0\n    repository: file://../{d}\n"
            for d in dependencies)
    (root / "Chart.yaml").write_text(chart)
    (root / "values.yaml").write_text(f"image:\n  repository: {repository}\n  tag: \"{tag}\"\n")
    (root / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    if test_hook:
        (root / "templates" / "test.yaml").write_text(TEST_HOOK)
    return root
