"""``spec.distribution`` read strictly and written back (only what differs
from the defaults)."""

from __future__ import annotations

from typing import Any

from kbuild.runtime.clusterfile.model import Distribution
from kbuild.runtime.clusterfile.schema import Doc

__all__ = ["dump_distribution", "parse_distribution"]

FIELDS = {"relay": "relay", "fanout": "fanout", "streams": "streams",
          "stallTimeout": "stall_timeout"}  # fmt: skip
LIMITS = {"fanout": (1, 64), "streams": (1, 1024), "stallTimeout": (1, 86400)}


def parse_distribution(doc: Doc, value: object) -> Distribution:
    """``spec.distribution`` (absent: the defaults)."""
    raw = doc.mapping("spec.distribution", value)
    doc.fields("spec.distribution", raw, FIELDS)
    out: dict[str, Any] = {}
    if "relay" in raw:
        if not isinstance(raw["relay"], bool):
            raise doc.error("spec.distribution.relay", "expected true or false", raw["relay"])
        out["relay"] = raw["relay"]
    for key, (low, high) in LIMITS.items():
        if key not in raw:
            continue
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
            raise doc.error(f"spec.distribution.{key}", f"expected a number {low}-{high}", v)
        if key != "stallTimeout" and not isinstance(v, int):
            raise doc.error(f"spec.distribution.{key}", "expected a whole number", v)
        out[FIELDS[key]] = v
    return Distribution(**out)


def dump_distribution(d: Distribution) -> dict[str, Any]:
    """The fields of ``d`` that differ from the defaults, as written in YAML."""
    default = Distribution()
    return {
        key: getattr(d, attr) for key, attr in FIELDS.items()
        if getattr(d, attr) != getattr(default, attr)
    }  # fmt: skip
