"""Which silos take part: their profiles, asked for, validated and bound to their nodes.

A silo answers the parameter query with its profile (:class:`~strategy.protocol.Profile`);
:func:`admit_profiles` keeps the plausible ones (:class:`~strategy.safeguards.Safeguards`),
one node per partition id, and settles each on the consortium's terms
(:class:`~strategy.terms.Terms`): the game uses the terms' value, capacity, price and
seconds per image, and a reported term that differs is flagged. Where the terms bind
organisations to node keys (deployment), a node's organisation is the one its
authenticated key belongs to, not the one it names. The ServerApp admits the silos before
the strategy exists (the calibration pilot needs them); the strategy admits late or
reconnected ones at each round's start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from logging import INFO, WARNING

from flwr.app import ArrayRecord, Message, MessageType
from flwr.common import log
from flwr.serverapp import Grid

from strategy import protocol
from strategy.game.scenario import LossCurve, ScenarioError, build_scenario
from strategy.protocol import Profile, SiloSettings
from strategy.replies import screen_replies
from strategy.safeguards import Safeguards
from strategy.terms import Terms, key_fingerprint


@dataclass
class Admission:
    """The admitted organisations' settled profiles by node, the nodes refused (with the
    reasons), and what was flagged about the admitted ones (reported terms that differ)."""

    profiles: dict[int, Profile]
    refused: dict[int, str] = field(default_factory=dict)
    flags: dict[int, tuple[str, ...]] = field(default_factory=dict)


def collect_profiles(grid: Grid, node_ids: Iterable[int], settings: SiloSettings, generator: ArrayRecord | None,
                     timeout: float) -> tuple[dict[int, Profile], dict[int, str]]:
    """The parameter round: query ``node_ids`` and validate each reported profile."""
    content = protocol.query_content(settings, generator)
    messages = [Message(content=content, dst_node_id=node, message_type=MessageType.QUERY) for node in node_ids]
    if not messages:
        return {}, {}
    screened = screen_replies(grid.send_and_receive(messages, timeout=timeout),
                              lambda reply: protocol.read_profile(reply.content))
    problems = dict(screened.dropped)
    for node in set(node_ids) - set(screened.reports) - set(problems):
        problems[node] = f"no reply within {timeout:.0f} s"
    return screened.reports, problems


def admit_profiles(grid: Grid, held: dict[int, Profile], settings: SiloSettings, generator: ArrayRecord | None,
                   safeguards: Safeguards, terms: Terms, timeout: float, ask: set[int] | None = None) -> Admission:
    """The connected nodes' settled profiles: ``held`` for nodes still connected, plus the
    answers of connected nodes without one (late or reconnected), the nodes refused, with
    reasons, and the flags of those admitted.

    A silo's identity is its partition id: where ``terms`` bind organisations to node keys,
    the one whose key its node authenticated with (a node with another key is refused; a
    partition id it names that differs is flagged); otherwise the one it names, bound to
    the node that first reported it, so a node naming a partition id that a connected node
    holds is refused, not let in. A node that disconnected loses its entry, so a silo that
    reconnects under a new node id is welcome back. Implausible profiles are refused.
    ``ask``: only these of the nodes without a profile are asked (default: all of them).
    """
    connected = set(grid.get_node_ids())
    admission = Admission({node: p for node, p in held.items() if node in connected})
    asked = connected - set(admission.profiles)
    asked = asked if ask is None else asked & ask
    fresh, admission.refused = collect_profiles(grid, sorted(asked), settings, generator, timeout)
    keys = node_partitions(grid, terms) if terms.binds_keys and fresh else {}
    for node, profile in sorted(fresh.items()):
        flags: list[str] = []
        if terms.binds_keys:
            partition = keys.get(node)
            if partition is None:
                admission.refused[node] = "its node key belongs to no organisation in the terms"
                continue
            if partition != profile.partition_id:
                flags.append(f"named partition id {profile.partition_id}, its node key is organisation {partition}'s")
                profile = replace(profile, partition_id=partition)
        holder = {p.partition_id: n for n, p in admission.profiles.items()}
        problem = safeguards.profile_problem(profile) or terms.problem(profile)
        settled = terms.settle(profile) if problem is None else None
        problem = problem or game_problem(settled.profile)
        if problem is None and profile.partition_id in holder:
            problem = f"partition id {profile.partition_id} is already held by node {holder[profile.partition_id]}"
        if problem is not None:
            admission.refused[node] = problem
            continue
        admission.profiles[node] = settled.profile
        flags.extend(settled.flags)
        if flags:
            admission.flags[node] = tuple(flags)
        log(INFO, "Organisation %d (node %d): n=%d; terms value=%.4g, capacity=%.4g, cost=%.4g per image",
            profile.partition_id, node, profile.n, settled.profile.value, settled.profile.capacity,
            settled.profile.cost)
        for flag in flags:
            log(WARNING, "Organisation %d (node %d) %s", profile.partition_id, node, flag)
    for node, reason in admission.refused.items():
        log(WARNING, "Node %d gave no usable profile: %s", node, reason)
    return admission


def game_problem(profile: Profile) -> str | None:
    """Why a settled profile cannot enter a round's game (a number beyond the game's domain,
    :func:`strategy.game.scenario.build_scenario`), or ``None``: checked per silo, so one
    silo's numbers refuse that silo and never the round."""
    try:
        build_scenario(n=[profile.n], skew=[0.0], cost=[profile.cost], value=[profile.value],
                       capacity=[profile.capacity], gamma=0.0, loss=LossCurve(), eta=0.0, omega=0.0)
    except ScenarioError as err:
        return f"outside the game's domain: {err}"
    return None


def node_partitions(grid: Grid, terms: Terms) -> dict[int, int]:
    """Node id -> the organisation whose key it authenticated with (nodes whose key is in
    no organisation's terms are left out)."""
    found = {}
    for info in grid.get_nodes():
        try:
            partition = terms.partition_of(key_fingerprint(info.public_key)) if info.public_key else None
        except ValueError:
            partition = None
        if partition is not None:
            found[int(info.node_id)] = partition
    return found
