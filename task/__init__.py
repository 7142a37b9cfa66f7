"""The learning task both apps share: labelled images, the data set and its
partitions (:mod:`task.data`), and the classifier (:mod:`task.model`).

Flower's examples keep this in a ``task`` module next to ``client_app`` and
``server_app``: the silos train the classifier, the server evaluates it. This package
imports nothing else of the project's (the layering test checks it).
"""
