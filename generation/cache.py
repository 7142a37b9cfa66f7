"""Generator checkpoints on disk: where each source's checkpoint lives, saving, loading.

Layout: ``<root>/generators/<cfg.fingerprint()>/`` holds the diffusers
``save_pretrained`` files plus ``generator.json`` (config, fingerprint, metadata such
as training steps and the classes seen). ``root`` defaults to ``$COCOGEN_CACHE`` or
``~/.cache/cocogen``.

Sources (:func:`checkpoint_path`):

* ``"federated"`` (default): a generator shared by all silos, found by its config alone
  at ``<root>/generators/<fingerprint>/`` (``save_generator(unet, cfg)``,
  ``load_generator(cfg)``; e.g. ``benchmarks/generator_quality.py``'s). A run's federated
  warm-up keys its own folder by its settings too and passes it as ``path``
  (``server_app.generator_stage.warmup_checkpoint``).
* ``"local"``: a silo's own generator, trained on its data only, at
  ``<root>/generators/<fingerprint>-local-<silo>/``. It can only generate the classes
  the silo has; other labels give meaningless images.
* ``"pretrained"``: any local diffusers ``UNet2DModel`` checkpoint directory, given by path.

:func:`load_generator` returns ``None`` when the checkpoint directory does not exist
(not trained yet) and raises :class:`GeneratorCheckpointError` when it exists but
cannot be used (missing/corrupted files, or a model incompatible with the config).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from generation.config import GeneratorConfig
from task.paths import cache_root

if TYPE_CHECKING:
    from diffusers import UNet2DModel

Source = Literal["federated", "local", "pretrained"]
SOURCES = ("federated", "local", "pretrained")
INFO_FILE = "generator.json"


class GeneratorCheckpointError(RuntimeError):
    """A generator checkpoint exists but cannot be loaded or does not fit the config."""


def checkpoint_path(
    cfg: GeneratorConfig,
    source: Source = "federated",
    root: str | Path | None = None,
    silo: str | int | None = None,
    path: str | Path | None = None,
) -> Path:
    """The checkpoint directory of ``source`` (see the module docstring).

    Raises:
        ValueError: on an unknown source, "local" without ``silo``, or "pretrained" without ``path``.
    """
    if source == "federated":
        return cache_root(root) / "generators" / cfg.fingerprint()
    if source == "local":
        if silo is None:
            raise ValueError('source "local" needs the silo id')
        return cache_root(root) / "generators" / f"{cfg.fingerprint()}-local-{silo}"
    if source == "pretrained":
        if path is None:
            raise ValueError('source "pretrained" needs the path of a local diffusers checkpoint directory')
        return Path(path).expanduser()
    raise ValueError(f"unknown generator source {source!r}; expected one of {SOURCES}")


def save_generator(
    unet: UNet2DModel,
    cfg: GeneratorConfig,
    root: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    path: str | Path | None = None,
) -> Path:
    """Save ``unet`` with its config and ``metadata`` (JSON-serialisable) and return the directory.

    The directory is ``path`` if given, else the federated cache entry of ``cfg``. It is
    written to a temporary sibling and swapped in, so readers never see a half-written
    checkpoint.
    """
    target = Path(path) if path is not None else checkpoint_path(cfg, "federated", root)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a checkpoint is shared
    try:
        unet.save_pretrained(staging)
        info = {"fingerprint": cfg.fingerprint(), "config": cfg.to_dict(), "metadata": metadata or {}}
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_generator(path_or_cfg: str | Path | GeneratorConfig, root: str | Path | None = None) -> UNet2DModel | None:
    """Load a generator (in eval mode) from a directory, or from the federated cache entry of a config.

    Given a config, the checkpoint must also have been saved with that config's
    fingerprint and have matching shapes. Only local files are read (no hub access).

    Returns:
        The UNet, or ``None`` if the directory does not exist.

    Raises:
        GeneratorCheckpointError: if the directory exists but is not a loadable,
            compatible class-conditional ``UNet2DModel`` checkpoint.
    """
    cfg = path_or_cfg if isinstance(path_or_cfg, GeneratorConfig) else None
    directory = checkpoint_path(cfg, "federated", root) if cfg else Path(path_or_cfg).expanduser()
    if not directory.exists():
        return None
    if cfg is not None:
        _check_fingerprint(directory, cfg)
    from diffusers import UNet2DModel

    try:
        unet = UNet2DModel.from_pretrained(directory, local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, KeyError, json.JSONDecodeError) as error:
        raise GeneratorCheckpointError(f"cannot load the generator checkpoint at {directory}: {error}") from error
    _check_compatible(unet, directory, cfg)
    return unet.eval()


def read_info(directory: str | Path) -> dict[str, Any]:
    """The ``generator.json`` of a checkpoint saved by :func:`save_generator` (``{}`` if absent)."""
    info_file = Path(directory) / INFO_FILE
    if not info_file.exists():
        return {}
    try:
        return json.loads(info_file.read_text())
    except json.JSONDecodeError as error:
        raise GeneratorCheckpointError(f"corrupted {info_file}: {error}") from error


def _check_fingerprint(directory: Path, cfg: GeneratorConfig) -> None:
    """Raise unless ``directory`` was saved for a config with ``cfg``'s fingerprint."""
    saved = read_info(directory).get("fingerprint")
    if saved != cfg.fingerprint():
        raise GeneratorCheckpointError(
            f"{directory} holds fingerprint {saved!r}, not {cfg.fingerprint()!r} of the requested config"
        )


def _check_compatible(unet: UNet2DModel, directory: Path, cfg: GeneratorConfig | None) -> None:
    """Raise unless ``unet`` is a 1-channel class-conditional UNet (matching ``cfg`` if given)."""
    config = unet.config
    problems = []
    if config.in_channels != 1 or config.out_channels != 1:
        problems.append(f"{config.in_channels}->{config.out_channels} channels instead of 1->1")
    if not config.num_class_embeds:
        problems.append("no class embedding")
    if cfg is not None and config.num_class_embeds != cfg.num_classes + 1:
        problems.append(f"{config.num_class_embeds} class embeddings instead of {cfg.num_classes + 1}")
    if cfg is not None and config.sample_size != cfg.image_size:
        problems.append(f"sample_size {config.sample_size} instead of {cfg.image_size}")
    if problems:
        raise GeneratorCheckpointError(f"the checkpoint at {directory} does not fit: {'; '.join(problems)}")
