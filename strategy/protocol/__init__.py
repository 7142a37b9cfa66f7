"""The wire contract between the ServerApp and the silos' ClientApps (docs/protocol.md).

Every record name, key and metric name that travels in a Flower message is stated
here and nowhere else. A message part is a frozen dataclass whose field names are its
keys (``images_generated`` travels as ``images-generated``); :func:`write` turns it into
a Flower record and :func:`read` turns a record back into it, checking the exact key
set, each value's type, finiteness and domain. Whole messages are built and read by
the ``*_content`` / ``read_*`` pairs below; every reader raises :class:`ProtocolError`
naming the record and key at fault, so a receiver can drop a bad message with a reason.

Modules: :mod:`~strategy.protocol.codec` (parts <-> records), :mod:`~strategy.protocol.names`
(record names and message types), :mod:`~strategy.protocol.parts` (what each part carries),
:mod:`~strategy.protocol.messages` (whole messages), :mod:`~strategy.protocol.node` (node
config, run config, seeds). Imports Flower's record types and numpy; no torch, nothing of
the project's outside this package. Import it as ``from strategy import protocol``.
"""

from strategy.protocol.codec import (
    ProtocolError,
    array_digest,
    check_arrays,
    checked,
    load_packed,
    packed,
    read,
    unpacked,
    wire_key,
    write,
)
from strategy.protocol.messages import (
    order_content,
    profile_content,
    query_content,
    read_order,
    read_profile,
    read_query,
    read_report,
    read_settings,
    report_content,
)
from strategy.protocol.names import (
    ARRAYS,
    CONFIG,
    FORK,
    GENERATOR,
    METRICS,
    NUM_EXAMPLES,
    PILOT,
    PILOT_ACTION,
    PROFILE,
    SETTINGS,
    TWIN,
    WARMUP,
    WARMUP_ACTION,
)
from strategy.protocol.node import (
    NODE_CACHE_DIR,
    NODE_CAPACITY,
    NODE_DATA_PATH,
    NODE_PARTITION_ID,
    NODE_PRICE_PER_SECOND,
    NODE_VALUE,
    RUN_CONFIG_OVERRIDES,
    RUN_CONFIG_UNSET,
    RUN_OPTIONS,
    SEED_STREAMS,
    NodeConfig,
    RunOption,
    read_node_config,
    round_seed,
)
from strategy.protocol.parts import (
    SETTINGS_VERSION,
    EvaluateOrder,
    EvaluateReport,
    PilotOrder,
    PilotReport,
    Profile,
    SiloSettings,
    TrainOrder,
    TrainReport,
    WarmupOrder,
    WarmupReport,
    per_partition,
)

__all__ = [
    "ARRAYS", "CONFIG", "GENERATOR", "METRICS", "NODE_CACHE_DIR", "NODE_CAPACITY", "NODE_DATA_PATH",
    "NODE_PARTITION_ID", "NODE_PRICE_PER_SECOND", "NODE_VALUE", "NUM_EXAMPLES", "PILOT", "PILOT_ACTION", "PROFILE",
    "RUN_CONFIG_UNSET", "RUN_OPTIONS", "RunOption",
    "FORK", "RUN_CONFIG_OVERRIDES", "SEED_STREAMS", "SETTINGS", "SETTINGS_VERSION", "TWIN", "WARMUP", "WARMUP_ACTION",
    "EvaluateOrder", "EvaluateReport", "NodeConfig", "PilotOrder", "PilotReport", "Profile", "ProtocolError",
    "SiloSettings", "TrainOrder", "TrainReport", "WarmupOrder", "WarmupReport", "array_digest", "check_arrays",
    "checked", "load_packed", "order_content", "packed", "per_partition", "profile_content", "query_content", "read",
    "read_node_config", "read_order", "read_profile", "read_query", "read_report", "read_settings", "report_content",
    "round_seed", "unpacked", "wire_key", "write",
]
