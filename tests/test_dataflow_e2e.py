"""End to end through the real dora CLI with a tiny development model (random weights)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, dora_cli

from dora_gpt_sovits.benchmark.dataflow import free_port
from dora_gpt_sovits.benchmark.dataflow import processes_with_env as node_processes
from dora_gpt_sovits.benchmark.two_machines import log_tails, stop

pytestmark = pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")
TEXT = "你好，世界。这是第二句话。今天天气很好。我们去公园散步吧。Hello from the dataflow. It streams while it decodes."
N_SENTENCES = 6


@pytest.fixture(scope="module")
def dev_models(tmp_path_factory) -> Path:
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("models") / "dev-tiny", size="tiny", version="v2")


def node_env(models: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the gsv-* scripts
    env.update(GSV_MODEL_DIR=str(models), GSV_SINK="wav", GSV_SEED="0", GSV_THREADS="1", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def assert_plausible_speech_file(path: Path, min_seconds: float) -> None:
    wav, rate = sf.read(path, dtype="float32")
    assert rate == 32000
    assert wav.ndim == 1 and len(wav) >= min_seconds * rate
    assert np.isfinite(wav).all()
    assert np.sqrt(np.mean(wav**2)) > 1e-3  # not silent


def log_records(output: str) -> list[dict]:
    """The JSON log lines of `dora run --log-format json`, in order."""
    records = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class GraphHang(RuntimeError):
    """`dora run` of a batch graph did not finish in time."""


def process_state(pid: int) -> str:
    """A node process as a hang report names it: its script, state and where the kernel has it waiting."""
    try:
        proc = Path("/proc") / str(pid)
        argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        script = Path(argv[1]).name if not argv[1].startswith("-") else argv[-1]  # python -uc "…# level-meter"
        state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
        return f"{pid} {script} {state.split(':', 1)[1].strip()} wchan={(proc / 'wchan').read_text()}"
    except (OSError, IndexError, StopIteration):
        return f"{pid} (gone)"


def dora_run_batch(graph: str, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """`dora run GRAPH --log-format json` of a graph that ends by itself: (exit code, output).

    A run that does not end raises GraphHang with the log so far and the node processes still
    alive, captured before they are killed, so an intermittent hang can be told apart (our node
    stuck at exit, or dora waiting) from the CI log alone."""
    marker = ("GSV_WAV_PATH", env["GSV_WAV_PATH"])
    with tempfile.TemporaryFile("w+", encoding="utf-8") as log:
        process = subprocess.Popen(
            ["dora", "run", graph, "--log-format", "json"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            alive = [process_state(pid) for pid in node_processes(*marker)]
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            for pid in node_processes(*marker):
                os.kill(pid, signal.SIGKILL)
            log.seek(0)
            raise GraphHang(
                f"dora run {graph} did not end within {timeout} s; node processes still alive: "
                f"{alive or 'none'}; log tail: {log.read()[-3000:]}"
            ) from None
        log.seek(0)
        return process.returncode, log.read()


def dora_run_batch_retrying_a_hang(graph: str, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """As dora_run_batch, with one more run after a hang. Once in ~20 runs on 2026-11-22 (1 of 3 CI
    simulations; 0 of 16 runs in a loop) a batch graph did not end; what hangs is not known yet
    (docs/reliability.md, "Known issue"). The first hang's report goes to pytest's warnings."""
    try:
        return dora_run_batch(graph, env, timeout)
    except GraphHang as hang:
        warnings.warn(f"retrying once after a graph hang: {hang}", stacklevel=2)
        return dora_run_batch(graph, env, timeout)


def installed_packages() -> dict[str, str]:
    return {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}


def test_a_batch_run_that_does_not_end_is_reported_with_its_live_nodes_and_leaves_none(dev_models, tmp_path):
    wav_path = tmp_path / "never.wav"
    env = node_env(dev_models, GSV_TEXT="你好。", GSV_WAV_PATH=str(wav_path))
    with pytest.raises(GraphHang) as hang:
        dora_run_batch("dataflow.yml", env, timeout=6)  # spawned by then, far too short to load the models
    assert "gsv-gpt" in str(hang.value) and "level-meter" in str(hang.value)
    deadline = time.time() + 10
    while node_processes("GSV_WAV_PATH", str(wav_path)) and time.time() < deadline:
        time.sleep(0.2)
    assert not node_processes("GSV_WAV_PATH", str(wav_path))


def test_default_dataflow_streams_every_sentence_to_a_wav_file(dev_models, tmp_path):
    wav_path = tmp_path / "speech.wav"
    env = node_env(dev_models, GSV_TEXT=TEXT, GSV_WAV_PATH=str(wav_path))
    before = installed_packages()
    returncode, output = dora_run_batch_retrying_a_hang("dataflow.yml", env, timeout=300)
    assert returncode == 0, output[-4000:]
    # dora resolves node paths with `uv run` when uv is installed; that must not re-sync the
    # environment under the running nodes (pyproject's [tool.uv] managed = false).
    assert installed_packages() == before
    records = log_records(output)
    chunks = [r for r in records if r["node_id"] == "audio-sink" and r["message"].startswith("audio chunk")]
    decoded = [r for r in records if r["node_id"] == "gpt" and " tokens in " in r["message"]]
    assert len(decoded) == N_SENTENCES
    # Streaming: the first audio reached the sink while the GPT was still decoding later sentences.
    assert chunks and chunks[0]["timestamp"] < decoded[-1]["timestamp"]
    # Nothing lost: every sentence arrived at the sink, in order.
    segments = [int(re.search(r"segment (\d+)", r["message"]).group(1)) for r in chunks]
    assert sorted(set(segments)) == list(range(N_SENTENCES)) and segments == sorted(segments)
    assert any("TTFA" in r["message"] for r in records)
    assert "DEVELOPMENT MODEL" in output  # everyone was told the audio is noise
    # Each sentence is at least the GPT's 11 forced tokens (0.44 s) plus 0.3 s of pause.
    assert_plausible_speech_file(wav_path, min_seconds=N_SENTENCES * 0.74)


def test_missing_weights_stop_the_graph_with_one_clear_line(tmp_path):
    env = node_env(tmp_path / "no-models", GSV_TEXT="你好。", GSV_WAV_PATH=str(tmp_path / "x.wav"))
    result = subprocess.run(
        ["dora", "run", "dataflow.yml", "--stop-after", "120s"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "model files missing" in log and "gsv-download" in log and "GSV_MODEL_DIR" in log


def test_service_graph_speaks_on_request_and_stops_cleanly(dev_models, tmp_path):
    wav_path = tmp_path / "service.wav"
    env = node_env(dev_models, GSV_WAV_PATH=str(wav_path), DORA_COORDINATOR_PORT="16013")

    dora = dora_cli(env)

    def wait_for(condition, seconds: float, what: str) -> None:
        deadline = time.time() + seconds
        while not condition():
            if time.time() > deadline:
                logs = dora("logs", "tts-test", "--node", "audio-sink")
                pytest.fail(f"{what} within {seconds} s; audio-sink log: {(logs.stdout + logs.stderr)[-2000:]}")
            time.sleep(1)

    assert dora("up").returncode == 0
    try:
        started = dora("start", "dataflows/service.yml", "--name", "tts-test", "--detach")
        assert started.returncode == 0, started.stdout + started.stderr
        say = [str(Path(sys.executable).parent / "gsv-say"), "你好。"]
        wait_for(lambda: subprocess.run(say, capture_output=True, env=env).returncode == 0, 400, "text-input listening")
        wait_for(wav_path.exists, 300, "speech written")
        time.sleep(0.5)
        assert_plausible_speech_file(wav_path, min_seconds=0.74)
        stopped = dora("stop", "--name", "tts-test")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        wait_for(lambda: not node_processes("GSV_WAV_PATH", str(wav_path)), 60, "every node process ended")
    finally:
        if dora("down").returncode != 0:
            dora("down", "--force")


class SameHostCluster:
    """A coordinator and two daemons (one named ``accelerator``) on this machine, linked as the README
    links two machines: through a zenoh rendezvous (``--zenoh-peer``) with multicast scouting off.
    Left to scouting, two daemons on one host may never link (CI containers, dora-rs/dora#3533), and
    then nothing crosses, not even the closes that end the run: the graph waits forever, silently."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.env = env | {"DORA_COORDINATOR_PORT": str(self.port)}
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []
        self.logs: dict[str, Path] = {}

    def spawn(self, role: str, *argv: str) -> None:
        self.logs[role] = self.workdir / f"{role}.log"
        with open(self.logs[role], "w", encoding="utf-8") as out:
            self.processes.append(
                subprocess.Popen(["dora", *argv], cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            )

    def up(self) -> None:
        self.spawn("coordinator", "coordinator", "--port", str(self.port), "--store", "memory")
        time.sleep(1)
        link = ["--zenoh-peer", f"tcp/127.0.0.1:{free_port()}", "--zenoh-no-multicast"]
        self.spawn("daemon", "daemon", "--local-listen-port", str(free_port()), *link)
        time.sleep(1)
        self.spawn(
            "daemon-accelerator",
            "daemon",
            "--machine-id",
            "accelerator",
            "--local-listen-port",
            str(free_port()),
            *link,
        )
        deadline = time.time() + 60
        while "daemon accelerator" not in self.logs["coordinator"].read_text(errors="replace"):
            if time.time() > deadline:
                pytest.fail(f"the daemon `accelerator` did not register within 60 s; {self.tails()}")
            time.sleep(0.2)

    def tails(self) -> str:
        return log_tails(self.logs)

    def down(self) -> None:
        subprocess.run(["dora", "destroy"], cwd=REPO, env=self.env, capture_output=True, timeout=60)
        for process in reversed(self.processes):
            stop(process)


def test_distributed_graph_runs_gpt_and_vocoder_on_a_second_daemon(dev_models, tmp_path):
    """dora's multi-machine deployment, with both daemons on this machine."""
    wav_path = tmp_path / "distributed.wav"
    cluster = SameHostCluster(
        node_env(dev_models, GSV_TEXT="你好，世界。这是第二句话。", GSV_WAV_PATH=str(wav_path)), tmp_path
    )
    dora = dora_cli(cluster.env)
    try:
        cluster.up()
        try:
            run = dora("start", "dataflows/distributed.yml", "--name", "tts-dist", "--attach", timeout=300)
        except subprocess.TimeoutExpired as e:  # a normal run takes ~30 s: say where it stood
            output = "".join(
                o.decode(errors="replace") if isinstance(o, bytes) else o or "" for o in (e.stdout, e.stderr)
            )
            pytest.fail(f"the run did not end within 300 s; its output: {output[-3000:]}; {cluster.tails()}")
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-4000:]
        assert re.search(r"gpt on daemon .accelerator.*tokens in", output)
        assert re.search(r"vocoder on daemon .accelerator.*RTF", output)
        assert_plausible_speech_file(wav_path, min_seconds=2 * 0.74)
    finally:
        cluster.down()
