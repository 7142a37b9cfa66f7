"""The learning task both apps share: labelled images, the data set and its
partitions (:mod:`task.data`), and the classifier (:mod:`task.model`).

Flower's examples keep this in a ``task`` module next to ``client_app`` and
``server_app``: the silos train the classifier, the server evaluates it. This package
imports nothing else of the project's (the layering test checks it).

Every process that imports the project (the apps, the sweep, the tools) runs without
Flower's telemetry, update check or run-time dependency installation, and offline from
the model hub, unless its environment says otherwise (the scripts source the same from
``deploy/flower.env``).
"""

import os

QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
         "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HF_HUB_OFFLINE": "1"}
"""The environment every process of the project runs with (``deploy/flower.env`` for the scripts)."""
for _name, _value in QUIET.items():
    os.environ.setdefault(_name, _value)
