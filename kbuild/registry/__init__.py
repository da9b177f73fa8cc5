"""kbuild.registry: kbuild's own OCI distribution client (httpx).

``push_image``/``pull_image`` move images between the local store and a
registry (``push_image`` an index with all its platforms, ``pull_all`` too);
``fetch_image`` brings an image (the platforms asked) into the store untagged,
for the builder to carry in a cluster image; ``login``/``logout`` manage
stored credentials; ``RegistryClient`` is the per-registry HTTP client they use.
"""

from .auth import Challenge, TokenCache, parse_www_authenticate
from .client import ClientOptions, RegistryClient
from .credentials import Credentials, auth_file_path
from .events import BlobDone, BlobProgress, BlobStarted, Event, ManifestDone, Progress, Retrying
from .fetch import fetch_image, pull_all
from .login import login, logout
from .transfer import pull_image, push_image
from .transport import RetryPolicy

__all__ = [
    "BlobDone",
    "BlobProgress",
    "BlobStarted",
    "Challenge",
    "ClientOptions",
    "Credentials",
    "Event",
    "ManifestDone",
    "Progress",
    "RegistryClient",
    "RetryPolicy",
    "Retrying",
    "TokenCache",
    "auth_file_path",
    "fetch_image",
    "login",
    "logout",
    "parse_www_authenticate",
    "pull_all",
    "pull_image",
    "push_image",
]
