"""Which silos take part: their profiles, asked for, validated and bound to their nodes.

A silo answers the parameter query with its profile (:class:`~strategy.protocol.Profile`);
:func:`admit_profiles` keeps the plausible ones (:class:`~strategy.safeguards.Safeguards`),
one node per partition id. The ServerApp admits the silos before the strategy exists
(the calibration pilot needs them); the strategy admits late or reconnected ones at each
round's start.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, Message, MessageType
from flwr.common import log
from flwr.serverapp import Grid

from strategy import protocol
from strategy.protocol import Profile, SiloSettings
from strategy.replies import screen_replies
from strategy.safeguards import Safeguards


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
                   safeguards: Safeguards, timeout: float) -> tuple[dict[int, Profile], dict[int, str]]:
    """The connected nodes' profiles: ``held`` for nodes still connected, plus the answers of
    connected nodes without one (late or reconnected), and the nodes refused, with reasons.

    A silo's identity is its partition id, bound to the (authenticated) node that first
    reported it: a node claiming a partition id that a connected node holds is refused,
    not let in. A node that disconnected loses its entry, so a silo that reconnects under
    a new node id is welcome back. Implausible profiles are refused.
    """
    connected = set(grid.get_node_ids())
    profiles = {node: p for node, p in held.items() if node in connected}
    fresh, problems = collect_profiles(grid, sorted(connected - set(profiles)), settings, generator, timeout)
    for node, profile in sorted(fresh.items()):
        holder = {p.partition_id: n for n, p in profiles.items()}
        problem = safeguards.profile_problem(profile)
        if problem is None and profile.partition_id in holder:
            problem = f"partition id {profile.partition_id} is already held by node {holder[profile.partition_id]}"
        if problem is not None:
            problems[node] = problem
            continue
        profiles[node] = profile
        log(INFO, "Organisation %d (node %d): n=%d, cost=%.4g, value=%.4g, capacity=%.4g",
            profile.partition_id, node, profile.n, profile.cost, profile.value, profile.capacity)
    for node, reason in problems.items():
        log(WARNING, "Node %d gave no usable profile: %s", node, reason)
    return profiles, problems
