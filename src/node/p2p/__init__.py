"""Network transport of a trustee node: py-libp2p 0.8.1 gossip of opaque payloads.

``GossipHost`` (Trio) and ``ThreadedGossipHost`` (sync facade, own thread) are the API.
Payload semantics (batches of signed votes) belong to the node, not to this package.
"""

from .config import DEFAULT_TOPIC, GossipConfig
from .host import GossipCounters, GossipHost, message_id
from .identity import KeyFileError, generate_key_file, key_pair_from_seed, load_seed, peer_id_from_seed
from .seen import SeenCache
from .threaded import Delivery, GossipHostStopped, GossipStartError, ThreadedGossipHost

__all__ = [
    "DEFAULT_TOPIC",
    "Delivery",
    "GossipConfig",
    "GossipCounters",
    "GossipHost",
    "GossipHostStopped",
    "GossipStartError",
    "KeyFileError",
    "SeenCache",
    "ThreadedGossipHost",
    "generate_key_file",
    "key_pair_from_seed",
    "load_seed",
    "message_id",
    "peer_id_from_seed",
]
