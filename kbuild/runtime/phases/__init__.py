"""The life cycle as phases (k0sctl's shape): a phase per file, a manager
running a list, one list per flow (:mod:`kbuild.runtime.phases.lists`).

- :mod:`~kbuild.runtime.phases.base`: :class:`Phase`, :class:`ClientPhase`,
  :class:`PlannedPhase`;
- :mod:`~kbuild.runtime.phases.manager`: :class:`Manager` (order, skip what is
  recorded, keep going or stop, dry-run = the plans of the same list);
- :mod:`~kbuild.runtime.phases.context`: :class:`Context`, :class:`Options`;
- one module per phase (preflight, provision, plugins, scripts, join, launch,
  clean).
"""
