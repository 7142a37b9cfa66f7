"""The names on the wire that are not field keys: records, message types, the weighting metric."""

from __future__ import annotations

from flwr.app import MessageType

# Record names inside a message's RecordDict.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SETTINGS = "settings"
PROFILE = "profile"
GENERATOR = "generator"
TWIN = "twin"
"""The counterfactual twin's model: trained on real images only (docs/model.md section 8)."""
FORK = "fork"
"""The round's fork: the main global model trained on the silo's real images only (docs/model.md section 8)."""

# Message types beyond Flower's plain ``query``, ``train`` and ``evaluate``: a ClientApp
# routes ``train.<action>`` to the function registered with ``@app.train(<action>)``.
WARMUP_ACTION = "warmup"
WARMUP = f"{MessageType.TRAIN}.{WARMUP_ACTION}"
"""A federated warm-up step of the generator."""
PILOT_ACTION = "pilot"
PILOT = f"{MessageType.TRAIN}.{PILOT_ACTION}"
"""The calibration pilot: learning-curve points from each silo."""

NUM_EXAMPLES = "num-examples"
"""The metric FedAvg weights by (Flower's ``weighted_by_key``)."""
