"""Several stages wired like a dataflow, served as one stage in one process (the gsv-tts node).

Each stage keeps the semantics it has as a node of its own, because it gets its messages the way
``node_runtime.serve`` gives them:

* **In order, depth first.** A message a stage yields goes at once to every input wired to its
  output, and on down the chain, before the stage is asked for its next message. So the first
  token chunk of the first sentence is vocoded and leaves as audio while the GPT has the rest of
  the text still to decode, as in the staged graph.
* **Control first.** A stage's generator may be suspended mid-chain (the GPT between two tokens).
  A message for one of a stage's ``control_inputs`` is handled at once, even then; any other
  message for a stage that is suspended, or that already has messages waiting, waits in a FIFO
  backlog until the chain has unwound. A stage is thus never re-entered with data while its
  generator is suspended (the GPT's KV cache belongs to the segment it is decoding), and what it
  is sent arrives in the order it was sent, as through a dora queue.
* **A malformed message is one stage's loss.** A ``MessageError`` is logged with the stage's name
  and that message dropped, as ``serve`` does for a node; the stages above it go on.
* **Timed work in time.** At every poll point (a ``None`` a stage yields: the GPT yields one per
  token) the stages whose ``next_deadline`` has passed are ticked, so the vocoder's real-time
  pacing keeps releasing audio while the GPT decodes.

Wiring is given as a dataflow's ``inputs`` are: ``{node: {input: "source/output"}}``, where the
source ``INPUT`` names the graph's own inputs and the node ``OUTPUT`` its outputs
(``{"output": {"audio": "vocoder/audio"}}``). The stages come from ``nodes/``; this module only
routes, so the library still never imports a node.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .messages import MessageError
from .node_runtime import Outgoing, Stage, StageBase

log = logging.getLogger("dora_gpt_sovits")

INPUT = "input"  # the source name of the graph's own inputs in a wiring
OUTPUT = "output"  # the node name of the graph's own outputs in a wiring

Wiring = Mapping[str, Mapping[str, str]]  # node -> its input -> "source node/output"
Delivery = tuple[str, str, Any, dict[str, Any]]  # node, input, value, metadata


def subscribers(wiring: Wiring) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(source node, output) -> the (node, input) pairs it feeds, in the wiring's order."""
    fed: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for node, inputs in wiring.items():
        for input_id, source in inputs.items():
            producer, _, output = source.partition("/")
            if not output:
                raise ValueError(f"{node}/{input_id}: source {source!r} is not 'node/output'")
            fed.setdefault((producer, output), []).append((node, input_id))
    return fed


class StageGraph(StageBase):
    """``stages`` (node -> stage, in pipeline order: ``finish`` goes through them in it) wired by ``wiring``."""

    def __init__(
        self,
        name: str,
        stages: Mapping[str, Stage],
        wiring: Wiring,
        primary_inputs: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ):
        unknown = {n for n in wiring if n not in stages and n != OUTPUT}
        unknown |= {s.partition("/")[0] for ins in wiring.values() for s in ins.values()} - {*stages, INPUT}
        if unknown:
            raise ValueError(f"{name}: the wiring names nodes that are not stages: {sorted(unknown)}")
        self.name = name
        self.stages = dict(stages)
        self.fed = subscribers(wiring)
        self.inputs = frozenset(output for producer, output in self.fed if producer == INPUT)
        self.primary_inputs = primary_inputs
        # An input of the graph is a control input where every stage it feeds takes it as one.
        self.control_inputs = frozenset(
            i for i in self.inputs if all(port in self.stages[n].control_inputs for n, port in self.fed[(INPUT, i)])
        )
        self.clock = clock
        # Stages whose generator is suspended mid-chain (a count: a control message handled
        # meanwhile runs the same stage's handler once more, nested).
        self.running: Counter[str] = Counter()
        self.backlog: deque[Delivery] = deque()
        self.active = False  # a chain is running (a control message may still arrive in between)

    # ---- the Stage interface ------------------------------------------------------------------
    def start(self) -> Iterator[Outgoing | None]:
        return self.activate(
            self.routed(node, stage.start()) for node, stage in self.stages.items()
        )  # fmt: skip

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterator[Outgoing | None]:
        if input_id not in self.inputs:
            raise MessageError(f"{self.name} has no input {input_id!r}; it reads {sorted(self.inputs)}")
        return self.activate([self.routed(INPUT, [Outgoing(input_id, value, metadata)])])

    def pending(self) -> bool:
        return bool(self.backlog) or any(stage.pending() for stage in self.stages.values())

    def next_deadline(self) -> float | None:
        deadlines = [d for stage in self.stages.values() if (d := stage.next_deadline()) is not None]
        return min(deadlines, default=None)

    def tick(self) -> Iterator[Outgoing | None]:
        return self.activate([self.due()])

    def finish(self) -> Iterator[Outgoing | None]:
        return self.activate(self.routed(node, stage.finish()) for node, stage in self.stages.items())

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None) -> Iterator[Outgoing | None]:
        """A producer of the graph's inputs restarted: each stage those inputs feed is told so, for
        its own inputs. ``inputs`` None (this process is a restart of the graph itself): the stages
        that feed the graph's outputs forward a restart marker, so a sink closes what the lost
        process left open."""
        if inputs is None:
            exits = {producer for (producer, _), targets in self.fed.items() if any(n == OUTPUT for n, _ in targets)}
            told = {n: None for n in exits}
        else:
            told = {}
            for i in inputs & self.inputs:
                for n, port in self.fed[(INPUT, i)]:
                    told[n] = (told.get(n) or frozenset()) | {port}
        return self.activate(
            self.routed(n, self.stages[n].upstream_restarted(node, ports)) for n, ports in told.items() if n != OUTPUT
        )

    # ---- routing --------------------------------------------------------------------------------
    def activate(self, chains: Iterable[Iterator[Outgoing | None]]) -> Iterator[Outgoing | None]:
        """Run chains of deliveries; the outermost call also drains the backlog they leave."""
        if self.active:  # a control message handled while a chain is suspended
            for chain in chains:
                yield from chain
            return
        self.active = True
        try:
            for chain in chains:
                yield from chain
            while self.backlog:
                yield from self.deliver(*self.backlog.popleft())
        finally:
            self.active = False

    def routed(self, node: str, messages: Iterable[Outgoing | None]) -> Iterator[Outgoing | None]:
        """Iterate ``node``'s messages, each sent on down the wiring before the next is asked for."""
        self.running[node] += 1
        try:
            for message in messages:
                if message is None:
                    yield None  # the loop polls dora's control messages here
                    yield from self.due()
                    continue
                for target, input_id in self.fed.get((node, message.output_id), ()):
                    if target == OUTPUT:
                        yield Outgoing(input_id, message.data, message.metadata)
                    else:
                        yield from self.send(target, input_id, message.data, message.metadata)
        finally:
            self.running[node] -= 1

    def send(self, node: str, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterator[Outgoing | None]:
        stage = self.stages[node]
        control = input_id in stage.control_inputs
        if not control and (self.running[node] or any(d[0] == node for d in self.backlog)):
            self.backlog.append((node, input_id, value, dict(metadata)))
            return
        yield from self.deliver(node, input_id, value, metadata)

    def deliver(self, node: str, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterator[Outgoing | None]:
        try:
            yield from self.routed(node, self.stages[node].handle(input_id, value, dict(metadata)))
        except MessageError as e:  # as serve() does for a node: this message is lost, the chain above goes on
            log.error("%s: dropped malformed message on '%s': %s", node, input_id, e)

    def due(self) -> Iterator[Outgoing | None]:
        """Tick every stage whose deadline has passed and that is not mid-chain."""
        now = self.clock()
        for node, stage in self.stages.items():
            deadline = stage.next_deadline()
            if not self.running[node] and deadline is not None and deadline <= now:
                yield from self.routed(node, stage.tick())
