"""dataflows/distributed.yml on two dora daemons in two network namespaces (issue #22).

Machine A (coordinator and daemon: text-input ... bert, audio-sink) and machine B (daemon
`accelerator`: gpt, vocoder) are joined by a veth pair, as two hosts would be. One run: a health
check (`gsv-say --health`); 10 utterances at once with the vocoder SIGSTOPped for 3 s once audio
flows (every one spoken); the gpt SIGSTOPped past the 15 s stall timeout with an utterance in
flight (reported `stalled` by the watchdog; the one sent while it is still stopped spoken or
reported `stalled`; once it runs, the path healthy again and the next one spoken); then the
coordinator paused past its 20 s heartbeat so both daemons reconnect, and 3 more utterances, which
must be spoken, and a health check, which must pass. Through the daemons (`queue_policy:
backpressure` on the inputs fed from the other machine) dora 1.1 stops delivering after such a
reconnect, silently (docs/reliability.md, "Across machines"); the graph's crossing inputs use
dora's node-to-node path instead. The 100-utterance run and the reproduction of the stall
(`--crossing-policy backpressure`) are scripts/multi_machine_load.py.
"""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import REPO

from dora_gpt_sovits.benchmark.dataflow import budget_gpt_checkpoint, node_env
from dora_gpt_sovits.benchmark.two_machines import TwoMachines, load_test
from dora_gpt_sovits.model_paths import resolve

pytestmark = [
    pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and ip"),
    pytest.mark.slow,
]
STALL_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def dev_models(tmp_path_factory):
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("models") / "dev-tiny", size="tiny", version="v2")


def test_two_machines_speak_under_load_and_a_reconnect_never_loses_an_utterance_silently(dev_models, tmp_path):
    paths = resolve({"GSV_MODEL_DIR": str(dev_models)}, need=("gpt", "sovits", "bert", "hubert"))
    env = node_env(paths, budget_gpt_checkpoint(paths, 40, tmp_path), "cpu", "float32", 1, 0)
    env["TWO_MACHINES_RUN"] = str(tmp_path)
    machines = TwoMachines(REPO, tmp_path, env, stall_timeout_s=STALL_TIMEOUT_S)
    try:
        machines.up()
        machines.start()
        result = load_test(machines, 10, pause_vocoder_s=3.0, stall_timeout_s=STALL_TIMEOUT_S, stuck_node="gsv-gpt")
    except Exception as e:
        raise AssertionError(f"{e}; {machines.tails()}") from None
    finally:
        machines.down()
    assert result.health_before["ok"], result.health_before
    assert [h["node"] for h in result.health_before["hops"]][-1] == "audio-sink"
    # Under load, with a paused vocoder: every utterance spoken, in order, none lost.
    assert not result.missing and not result.failed and result.completed == 10 and result.in_order, result
    # The gpt stuck (SIGSTOP) past the stall timeout: its utterance is reported, with what to do,
    # within the timeout. The one sent while it is still stopped may be lost by dora with it (its
    # zenoh peers dropped the gpt's sessions; CI run of 2026-12-07): spoken or reported stalled,
    # never unanswered. Once it runs again the path answers a health probe, and the next is spoken.
    stuck = result.stuck
    assert stuck["stuck_errors"] and "stalled" in stuck["stuck_errors"][0], stuck
    assert STALL_TIMEOUT_S <= stuck["reported_after_s"] <= STALL_TIMEOUT_S + 10, stuck
    assert stuck["sent_while_stuck"], stuck
    while_stuck = stuck["while_stuck_report"]
    assert while_stuck is not None, stuck
    assert not while_stuck["errors"] or "stalled" in while_stuck["errors"][0], stuck
    assert stuck["healthy"]["ok"], stuck
    assert stuck["next_spoken"], stuck
    after = result.reconnect
    assert not after["missing"], after  # nothing silently lost, within the bound
    assert after["answered_within_s"] <= after["bound_s"]
    # The daemons reconnected and the graph serves on: every utterance spoken, the path healthy.
    assert after["recovered"] and len(after["spoken"]) == after["utterances"], after
