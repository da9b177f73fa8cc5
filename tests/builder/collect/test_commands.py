"""What launch commands apply, read as the shell will run them (table of commands)."""

from __future__ import annotations

import pytest

from kbuild.builder.collect.commands import HelmInstall, KubectlApply, parse_command

APP = "application/apps/web"
ENV = {"NS": "web", "TAG": "1.2", "REPLICAS": "2"}


@pytest.mark.parametrize(("command", "cwd", "expected"), [
    ("kubectl apply -f web.yaml", APP, [KubectlApply([f"{APP}/web.yaml"])]),
    ("kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f manifests/web.yaml",
     ".", [KubectlApply(["manifests/web.yaml"])]),
    ("kubectl create -f=a.yaml -fb.yaml --filename c/ --filename=d.yml -R", ".",
     [KubectlApply(["a.yaml", "b.yaml", "c", "d.yml"], recursive=True)]),
    ("kubectl apply -f https://example.com/x.yaml", ".", []),
    ("kubectl apply -f /etc/host-file.yaml", ".", []),
    ("kubectl apply -f ../../../../etc/passwd", APP, []),  # above the image root
    ("kubectl apply -f ../../../etc/x.yaml", APP, [KubectlApply(["etc/x.yaml"])]),
    ("kubectl get pods -f x.yaml", ".", []),
    ("kubectl apply -f a.yaml && helm install es . --namespace $NS", APP,
     [KubectlApply([f"{APP}/a.yaml"]), HelmInstall("es", APP, "web")]),
    ("helm upgrade --install web ./chart -n ${NS} --set image.tag=$TAG "
     "--set-string replicas=$REPLICAS -f values.yaml,prod.yaml --wait --timeout 5m", APP,
     [HelmInstall("web", f"{APP}/chart", "web", [f"{APP}/values.yaml", f"{APP}/prod.yaml"],
                  [("--set", "image.tag=1.2"), ("--set-string", "replicas=2")])]),
    ("helm install --generate-name ../charts/x", "charts/y",
     [HelmInstall("release", "charts/charts/x")]),
    ("helm install db oci://registry/charts/db", ".", []),
    ("helm install db bitnami/postgresql", ".", [HelmInstall("db", "bitnami/postgresql")]),
    ("NS=x helm template a . --set image.tag=$UNDEFINED", APP,
     [HelmInstall("a", APP, None, [], [("--set", "image.tag=__KBUILD_UNSET_UNDEFINED__")])]),
    ("bash install.sh; echo 'kubectl apply -f x'", APP, []),
    ("helm install 'unterminated", APP, []),
])
def test_parse_command(command: str, cwd: str, expected: list[object]) -> None:
    assert parse_command(command, cwd, ENV) == expected
