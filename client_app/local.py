"""What a silo computes in a game round, apart from messages: the quota's synthetic images
and its three locally trained models (docs/model.md section 8): the main one on real +
synthetic images, the fork (the same global model on the real images alone) and the twin
(the twin global model on the real images alone).

The ClientApp's ``train`` handler trains them with the round's own seeds; the run's
replays (:mod:`experiments.replay`) make the same images, or another quota's, and train
again with the same or other seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord

from client_app.silo import SiloData, generator_config, silo_generator, training_tensors
from generation import allocate, compute_seconds, sample
from strategy.protocol import NodeConfig, SiloSettings, array_digest
from task.device import resolve_device
from task.images import IMAGE_SHAPE
from task.model import Net, train


@dataclass(frozen=True)
class Synthetic:
    """A quota's synthetic images, their labels, and the compute seconds making them took."""

    images: torch.Tensor
    labels: torch.Tensor
    seconds: float


@dataclass(frozen=True)
class RoundModels:
    """A silo's trained models of a round."""

    main: Net
    fork: Net
    twin: Net
    num_examples: int
    """Real + synthetic images the main model trained on."""


def round_models(settings: SiloSettings, silo: SiloData, made: Synthetic, main: ArrayRecord, twin: ArrayRecord,
                 seed: int) -> RoundModels:
    """The round's two arms (:func:`arms`) and ``twin`` trained on the real images alone,
    all three with the training seed ``seed`` and the same epochs."""
    model, fork = arms(settings, silo, made, main, seed)
    return RoundModels(model, fork, on_real(settings, silo, twin, seed), len(silo.org.train.labels) + len(made.labels))


def arms(settings: SiloSettings, silo: SiloData, made: Synthetic, main: ArrayRecord, seed: int) -> tuple[Net, Net]:
    """``main`` trained on the real images + ``made``, and the fork: ``main`` again on the
    real images alone, both with the training seed ``seed``, so the fork draws its own
    batches of the real images (main's batches mix in synthetic ones). With no synthetic
    image the fork is main's copy (trained once, so equal on any device); otherwise the two
    differ by the synthetic images and the batches and steps they change."""
    model = on_real_and(settings, silo, made, main, seed)
    return model, on_real(settings, silo, main, seed) if len(made.labels) else copied(model)


def on_real_and(settings: SiloSettings, silo: SiloData, made: Synthetic, arrays: ArrayRecord, seed: int) -> Net:
    """The model in ``arrays`` trained on the silo's real images + ``made`` with the seed ``seed``."""
    real_images, real_labels = training_tensors(silo)
    return trained(settings, arrays, torch.cat([real_images, made.images]), torch.cat([real_labels, made.labels]),
                   seed)


def on_real(settings: SiloSettings, silo: SiloData, arrays: ArrayRecord, seed: int) -> Net:
    """The model in ``arrays`` trained on the silo's real images alone with the seed ``seed``:
    a fork arm, a twin, a deployed fork."""
    real_images, real_labels = training_tensors(silo)
    return trained(settings, arrays, real_images, real_labels, seed)


def copied(model: Net) -> Net:
    """Another model with ``model``'s weights."""
    copy = Net().to(next(model.parameters()).device)
    copy.load_state_dict(model.state_dict())
    return copy


def none_made() -> Synthetic:
    """No synthetic image: a silo that made none, or did not train in the round asked about."""
    return Synthetic(torch.empty((0, 1, *IMAGE_SHAPE)), torch.empty(0, dtype=torch.long), 0.0)


def deployed_models(settings: SiloSettings, silo: SiloData, made: Synthetic, main: ArrayRecord, fork: ArrayRecord,
                    seed: int) -> tuple[Net, Net]:
    """The organisation's deployed models of the round (docs/model.md section 8): the main
    global model fine-tuned on the real images + the round's own synthetic ones ``made``
    (kept from the round, never sampled again), and the fork global model on the real
    images alone, both with the fine-tune seed ``seed`` and the local epochs. With no
    synthetic image and one global model (nobody generated) the two are one model, trained
    once and copied, so equal on any device."""
    deployed_main = on_real_and(settings, silo, made, main, seed)
    if one_model(made, main, fork):
        return deployed_main, copied(deployed_main)
    return deployed_main, on_real(settings, silo, fork, seed)


def one_model(made: Synthetic, main: ArrayRecord, fork: ArrayRecord) -> bool:
    """No synthetic image and one global model: the deployed main and fork are one model."""
    return not len(made.labels) and array_digest(main) == array_digest(fork)


def synthetic(settings: SiloSettings, silo: SiloData, node: NodeConfig, generator: ArrayRecord | None, quota: int,
              target: tuple[float, ...], seed: int) -> Synthetic:
    """``quota`` synthetic images with labels allocated to move the silo's mix towards ``target``,
    and the compute seconds spent making them (0 for none; :func:`generation.compute_seconds`).
    ``generator``: the consortium's weights, where the generator source is federated."""
    per_class = allocate(quota, silo.org.label_counts, np.asarray(target, dtype=float))
    wanted = np.repeat(np.arange(len(per_class)), per_class)
    if quota == 0:
        return Synthetic(torch.empty((0, 1, *IMAGE_SHAPE)), torch.from_numpy(wanted).long(), 0.0)
    device = resolve_device(settings.device)
    started = compute_seconds(device)
    unet = silo_generator(settings, generator, silo, node)
    images = sample(unet, wanted, generator_config(settings), seed=seed)
    return Synthetic(images, torch.from_numpy(wanted).long(), compute_seconds(device) - started)


def trained(settings: SiloSettings, arrays: ArrayRecord, images: torch.Tensor, labels: torch.Tensor,
            seed: int) -> Net:
    """The model in ``arrays`` after this silo's local training on the given images."""
    model = Net().to(resolve_device(settings.device))
    model.load_state_dict(arrays.to_torch_state_dict())
    train(model, images, labels, epochs=settings.local_epochs, lr=settings.learning_rate,
          batch_size=settings.batch_size, seed=seed)
    return model
