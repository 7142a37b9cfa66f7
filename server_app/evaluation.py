"""The server's own data and measurements: the market set (as the silos hold it), its
validation set (what gains, utilities and transfers follow) and the global test set
(the reported accuracy), all cut from the test split by :func:`task.data.server_split`;
and the server's own update of a round's model, the direction silos' updates are screened
by (:meth:`ServerData.reference_update`)."""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord

from server_app.settings import ServerDataSettings
from strategy.accounting import Judgement
from strategy.protocol import SiloSettings, round_seed
from task.data import load_dataset, server_split
from task.device import resolve_device
from task.model import Net, Scores, evaluate, to_tensor, train

Images = tuple[torch.Tensor, torch.Tensor]
REFERENCE_IMAGES = 500
"""Validation images the server's reference update trains on (private to the server: no silo
can aim an update at them)."""


class ServerData:
    """Evaluates models on the server's three sets, cut from ``dataset``'s test split under
    ``seed``; decoded data cached under ``cache``; models run on ``device``."""

    def __init__(self, dataset: ServerDataSettings, seed: int, cache: Path, device: str) -> None:
        _, test = load_dataset(dataset.name, root=dataset.root, download=dataset.download,
                               cache_dir=str(cache / "data"))
        splits = server_split(test, dataset.market_size, dataset.validation_size, seed)
        self.market, self.validation, self.test = ((to_tensor(s.images), torch.from_numpy(s.labels)) for s in splits)
        self.device = resolve_device(device)

    def judge(self, arrays: ArrayRecord) -> Judgement:
        """A returned model's accuracy on the market set and on the validation set."""
        model = _model(arrays, self.device)
        return Judgement(evaluate(model, *self.market).accuracy, evaluate(model, *self.validation).accuracy)

    def reference_update(self, sent: ArrayRecord, settings: SiloSettings, server_round: int, seed: int) -> ArrayRecord:
        """``sent`` trained as a silo trains it (``settings``' epochs, learning rate and batch
        size) on the first :data:`REFERENCE_IMAGES` validation images: the server's own update,
        against whose direction :class:`strategy.aggregation.Aggregation` screens the members'."""
        images, labels = (part[:REFERENCE_IMAGES] for part in self.validation)
        model = _model(sent, self.device)
        train(model, images, labels, epochs=settings.local_epochs, lr=settings.learning_rate,
              batch_size=settings.batch_size, seed=round_seed(seed, server_round, "reference"))
        return ArrayRecord(model.state_dict())

    def test_scores(self, arrays: ArrayRecord) -> Scores:
        """A global model's loss and accuracy on the global test set."""
        return evaluate(_model(arrays, self.device), *self.test)


def _model(arrays: ArrayRecord, device: torch.device) -> Net:
    model = Net().to(device)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model
