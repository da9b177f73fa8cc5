"""What launch commands apply: the files of ``kubectl apply -f`` and the charts of ``helm install``.

Commands are read as the shell would see them at run time: ``$VAR`` and
``${VAR}`` take the image ENV and the app's APPENV (a variable without a
value becomes a marker, so an image built from it fails with its name),
``&&``, ``||``, ``;`` and ``|`` separate commands. Only what can be read
in the image counts: local paths, not URLs or repository charts.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from .found import UNSET

_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_OPERATORS = {"&&", "||", ";", "|", "&", ";;", "(", ")"}
_KUBECTL_VERBS = {"apply", "create", "replace"}
_HELM_VERBS = {"install", "upgrade", "template"}
#: helm flags that take a value as the next word (others are switches).
_HELM_VALUE_FLAGS = {
    "--set", "--set-string", "--set-file", "--set-json", "--set-literal", "-f", "--values",
    "-n", "--namespace", "--version", "--timeout", "--kubeconfig", "--kube-context", "--repo",
    "--username", "--password", "--ca-file", "--cert-file", "--key-file", "--keyring",
    "--post-renderer", "--post-renderer-args", "--description", "--name-template", "-o",
    "--output", "--registry-config", "--repository-cache", "--repository-config",
    "--burst-limit", "--qps", "-l", "--labels", "--kube-apiserver", "--kube-as-user",
    "--kube-as-group", "--kube-ca-file", "--kube-token", "--kube-tls-server-name",
    "--history-max", "-a", "--api-versions", "--kube-version", "-s", "--show-only",
    "--output-dir",
}


@dataclass
class KubectlApply:
    """``kubectl apply|create|replace -f PATH…`` (paths relative to the image root)."""

    paths: list[str]
    recursive: bool = False


@dataclass
class HelmInstall:
    """``helm install|upgrade|template [NAME] CHART`` with the values it sets."""

    release: str
    chart: str  # relative to the image root
    namespace: str | None = None
    values_files: list[str] = field(default_factory=list)  # relative to the image root
    sets: list[tuple[str, str]] = field(default_factory=list)  # (flag, "k=v")


Applied = KubectlApply | HelmInstall


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """``$VAR``/``${VAR}`` from ``env``; a missing one becomes the UNSET marker."""
    return _VAR_RE.sub(lambda m: env.get(m.group(1) or m.group(2),
                                         UNSET.format(m.group(1) or m.group(2))), text)


def split_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell line, as word lists (unparseable text: none)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return []
    out: list[list[str]] = [[]]
    for w in words:
        if w in _OPERATORS:
            out.append([])
        else:
            out[-1].append(w)
    return [c for c in out if c]


def parse_command(command: str, cwd: str, env: Mapping[str, str]) -> list[Applied]:
    """What ``command``, run in ``cwd`` (relative to the image root), applies."""
    out: list[Applied] = []
    for words in split_commands(expand_vars(command, env)):
        while words and "=" in words[0] and not words[0].startswith(("-", "/")):
            words = words[1:]  # VAR=value prefixes
        if len(words) < 2:
            continue
        tool = posixpath.basename(words[0])
        if tool == "kubectl":
            applied: Applied | None = _kubectl(words[1:], cwd)
        elif tool == "helm":
            applied = _helm(words[1:], cwd)
        else:
            applied = None
        if applied is not None:
            out.append(applied)
    return out


def _local(path: str, cwd: str) -> str | None:
    if "://" in path or path.startswith("-") or not path:
        return None
    if path.startswith("/"):
        return None  # host paths, not the image's files
    joined = posixpath.normpath(posixpath.join(cwd, path))
    return None if joined.startswith("..") else joined


def _flag_value(words: list[str], i: int) -> tuple[str, str | None, int]:
    """(flag, value, next index) for ``--f=v``, ``-fv`` is not read, ``--f v``."""
    word = words[i]
    if "=" in word and word.startswith("--"):
        flag, _, value = word.partition("=")
        return flag, value, i + 1
    if word.startswith("-f") and len(word) > 2 and not word.startswith("--"):
        return "-f", word[2:].removeprefix("="), i + 1
    return word, words[i + 1] if i + 1 < len(words) else None, i + 2


def _kubectl(args: list[str], cwd: str) -> KubectlApply | None:
    if not any(a in _KUBECTL_VERBS for a in args):
        return None
    paths: list[str] = []
    recursive = False
    i = 0
    while i < len(args):
        word = args[i]
        if word in ("-R", "--recursive") or word.startswith("--recursive=t"):
            recursive = True
        if word in ("-f", "--filename") or word.startswith(("--filename=", "-f")):
            _flag, value, i = _flag_value(args, i)
            local = _local(value or "", cwd)
            if local is not None:
                paths.append(local)
            continue
        i += 1
    return KubectlApply(paths, recursive) if paths else None


def _helm(args: list[str], cwd: str) -> HelmInstall | None:
    positional: list[str] = []
    sets: list[tuple[str, str]] = []
    values: list[str] = []
    namespace: str | None = None
    generate = False
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("-"):
            positional.append(word)
            i += 1
            continue
        if word in ("-g", "--generate-name"):
            generate = True
        if "=" not in word and word not in _HELM_VALUE_FLAGS:
            i += 1  # a switch (``--wait``, ``--install`` …)
            continue
        flag, value, i = _flag_value(args, i)
        if value is None:
            break
        if flag.startswith("--set"):
            sets.append((flag, value))
        elif flag in ("-f", "--values"):
            values.extend(v for v in (_local(x, cwd) for x in value.split(",")) if v)
        elif flag in ("-n", "--namespace"):
            namespace = value
    if not positional or positional[0] not in _HELM_VERBS:
        return None
    rest = positional[1:]
    if generate and rest:
        rest = ["release", *rest]
    if len(rest) < 2:
        return None
    chart = _local(rest[1], cwd)
    if chart is None:
        return None
    return HelmInstall(rest[0], chart, namespace, values, sets)
