"""Build logic of cluster-image metadata: which type an APP's files make.

The metadata format itself (``ImageMeta``, ``AppInfo``, ``default_cmds``, the
``io.kbuild.image.v1`` label and its JSON schema) lives in
``kbuild.layerstore`` (``kbuild/layerstore/_imagemeta.py``), where the runtime
reads what the builder writes.
"""

from __future__ import annotations


def detect_type(files: list[tuple[str, bool, bool]]) -> str:
    """sealer's app type from the entries of the app's directory: (name, is_dir, dir_has_chart).

    The directory is a chart (it holds ``Chart.yaml``: a chart directory given
    to APP, whose contents sealer copies), or holds only one chart directory
    or ``.tgz`` → ``helm``; only ``.yaml``/``.yml`` files (or directories of
    them) → ``kube``; only ``.sh`` → ``shell``; anything else → ``unknown``
    (APPCMDS must say what to run).
    """
    if not files:
        return "unknown"
    if ("Chart.yaml", False, False) in files:
        return "helm"
    if len(files) == 1:
        name, is_dir, has_chart = files[0]
        if (is_dir and has_chart) or (not is_dir and name.endswith((".tgz", ".tar.gz"))):
            return "helm"
    if all(n.endswith((".yaml", ".yml")) or (d and not c) for n, d, c in files):
        return "kube"
    if all(n.endswith(".sh") and not d for n, d, _ in files):
        return "shell"
    return "unknown"
