"""The server's own data and measurements: the market set (as the silos hold it), its
validation set (what gains, utilities and transfers follow) and the global test set
(the reported accuracy), all cut from the test split by :func:`task.data.server_split`."""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord

from server_app.settings import ServerDataSettings
from strategy.accounting import Judgement
from task.data import load_dataset, server_split
from task.device import resolve_device
from task.model import Net, Scores, evaluate, to_tensor

Images = tuple[torch.Tensor, torch.Tensor]


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

    def test_scores(self, arrays: ArrayRecord) -> Scores:
        """A global model's loss and accuracy on the global test set."""
        return evaluate(_model(arrays, self.device), *self.test)


def _model(arrays: ArrayRecord, device: torch.device) -> Net:
    model = Net().to(device)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model
