"""The Clusterfile: load, validate and save sealer.io/v2 compatible documents.

``model`` holds the dataclasses, ``parse`` the strict loader (every value
through :mod:`kbuild.runtime.values`), ``dump`` the writer, ``edit`` the
Clusterfile of command-line flags and the edited copies of join and delete.
"""

from kbuild.runtime.clusterfile.dump import dumps, save, to_documents
from kbuild.runtime.clusterfile.edit import (
    add_hosts,
    from_flags,
    iter_host_ips,
    remove_hosts,
    split_ip_list,
    with_hosts,
    with_image,
)
from kbuild.runtime.clusterfile.model import (
    API_VERSION,
    DEFAULT_CLUSTER_NAME,
    DEFAULT_DATA_ROOT,
    DOC_API_VERSION,
    HOST_ACTIONS,
    PLUGIN_ACTIONS,
    ROLES,
    SSH,
    TAINT_EFFECTS,
    Cluster,
    Clusterfile,
    ConfigDoc,
    Distribution,
    Host,
    HostGroup,
    PluginDoc,
    Taint,
)
from kbuild.runtime.clusterfile.parse import (
    expand_ips,
    load,
    load_plugins,
    loads,
    parse_env,
    parse_taint,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_CLUSTER_NAME",
    "DEFAULT_DATA_ROOT",
    "DOC_API_VERSION",
    "HOST_ACTIONS",
    "PLUGIN_ACTIONS",
    "ROLES",
    "SSH",
    "TAINT_EFFECTS",
    "Cluster",
    "Clusterfile",
    "ConfigDoc",
    "Distribution",
    "Host",
    "HostGroup",
    "PluginDoc",
    "Taint",
    "add_hosts",
    "dumps",
    "expand_ips",
    "from_flags",
    "iter_host_ips",
    "load",
    "load_plugins",
    "loads",
    "parse_env",
    "parse_taint",
    "remove_hosts",
    "save",
    "split_ip_list",
    "to_documents",
    "with_hosts",
    "with_image",
]
