"""The coordinator's Flower ServerApp.

Composes the Hydra config (``overrides`` run-config key), waits (bounded) for the
silos, runs the generator warm-up when needed, asks every silo for its profile, runs
the game rounds with :class:`strategy.fedgame.GameFedAvg`, evaluates the final global
model on the global test set, and writes the results directory.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from logging import INFO

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig

from server_app.config import compose_config, game_settings, server_cache, silo_settings
from server_app.generator_stage import prepare_generator
from server_app.plots import plot_run
from server_app.results import results_directory, summarise, summary_table, write_summary
from strategy import protocol
from strategy.fedgame import GameFedAvg
from strategy.ledger import Ledger
from task.data import load_dataset, market_split
from task.model import Net, Scores, evaluate, set_threads, to_tensor


def wait_for_nodes(grid: Grid, wanted: int, seconds: float, minimum: int) -> list[int]:
    """Node ids once ``wanted`` are connected, or whatever is there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while len(nodes := list(grid.get_node_ids())) < wanted and time.monotonic() < deadline:
        time.sleep(1.0)
    if len(nodes) < minimum:
        raise RuntimeError(f"only {len(nodes)} SuperNodes connected within {seconds:.0f} s; {minimum} needed")
    log(INFO, "%d SuperNodes connected", len(nodes))
    return sorted(nodes)[:wanted]


def run_experiment(grid: Grid, cfg: DictConfig) -> str:
    """One complete run; returns the results directory."""
    started = time.perf_counter()
    game = game_settings(cfg)
    settings = silo_settings(cfg)
    directory = results_directory(cfg)
    log(INFO, "Results: %s", directory)
    federation = cfg.federation
    timeout = float(federation.reply_timeout_seconds)
    nodes = wait_for_nodes(grid, int(federation.num_orgs), float(federation.node_wait_seconds),
                           int(federation.min_orgs))
    warmup_started = time.perf_counter()
    generator = prepare_generator(grid, nodes, settings, server_cache(cfg), timeout)
    warmup_seconds = time.perf_counter() - warmup_started
    ledger = Ledger(directory)
    strategy = GameFedAvg(game, settings, generator, ledger, timeout, min_orgs=int(federation.min_orgs))
    strategy.refresh_profiles(grid)
    if len(strategy.profiles) < int(federation.min_orgs):
        raise RuntimeError(f"only {len(strategy.profiles)} organisations reported usable profiles")

    set_threads(2)
    test_images, test_labels = _global_test_set(cfg)

    def global_scores(arrays: ArrayRecord) -> Scores:
        model = Net()
        model.load_state_dict(arrays.to_torch_state_dict())
        return evaluate(model, test_images, test_labels)

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        scores = global_scores(arrays)
        ledger.annotate(server_round, global_test_accuracy=scores.accuracy, global_test_loss=scores.loss)
        return MetricRecord(asdict(scores))

    torch.manual_seed(int(cfg.seed))
    result = strategy.start(grid, ArrayRecord(Net().state_dict()), num_rounds=int(federation.rounds),
                            timeout=timeout, train_config=ConfigRecord(), evaluate_config=ConfigRecord(),
                            evaluate_fn=evaluate_global)
    final_accuracy = global_scores(result.arrays).accuracy
    summary = summarise(cfg, ledger.rows, final_accuracy, time.perf_counter() - started, warmup_seconds)
    write_summary(directory, summary)
    plot_run(ledger.rows, directory)
    log(INFO, "Run summary (%s):\n%s", directory, summary_table(summary, ledger.rows))
    return str(directory)


def _global_test_set(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The official test split minus the market validation set."""
    dataset = cfg.dataset
    _, test = load_dataset(dataset.name, root=dataset.root, download=bool(dataset.download),
                           cache_dir=str(server_cache(cfg) / "data"))
    _, rest = market_split(test, int(dataset.market_size), int(cfg.seed))
    return to_tensor(rest.images), torch.from_numpy(rest.labels)


def make_server_app(cfg: DictConfig) -> ServerApp:
    """A ServerApp bound to an already composed config (sweeps and in-process tests)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run_experiment(grid, cfg)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run``: the config is conf/ plus the ``overrides`` run-config string."""
    run_experiment(grid, compose_config(str(context.run_config.get(protocol.RUN_CONFIG_OVERRIDES, ""))))
