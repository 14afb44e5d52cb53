"""README's "As a long-lived service" block, run as written in a fresh clone of the repository.

The block is read from the clone's README.md, so the test follows the README when it changes. Its
lines run verbatim in one bash (``set -e``: each must succeed), with two lines of the test's own
after the first ``gsv-say "…"``: the WAV is waited for there, because the README's next line, a
barge-in, would otherwise silence the utterance before it is written. The clone borrows the test's
venv (``.venv`` links to it) instead of installing its own, and the shell starts without that venv
on PATH: the block's first line must put it there. What it shows:

* a fresh clone serves: the models (a development model here) reach the nodes through the daemon;
* ``gsv-say`` right after ``dora start`` waits for the graph, saying for what, instead of failing;
* the speech lands in the repository's ``out/`` (not ``dataflows/out/``), and the audio-sink's
  log names its absolute path;
* ``dora stop`` and ``dora down`` leave no process behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("dora", path=str(Path(sys.prefix) / "bin")) is None, reason="dora CLI not installed"
    ),
]
SECTION = "## As a long-lived service"
COORDINATOR_PORT = "16513"  # a coordinator of its own: other graphs on this machine are not touched
BLOCK_TIMEOUT_S = 400  # a cold start on 2 busy cores takes ~1 min; the rest is margin


def service_block(readme: str) -> str:
    """The first ```bash block under SECTION."""
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"no ```bash block under {SECTION!r} in README.md"
    return match.group(1)


def with_wav_wait(block: str, wav: str) -> str:
    """The block, and after its first `gsv-say "…"` line a wait for the WAV (see the module doc)."""
    lines = block.splitlines()
    say = next((i for i, line in enumerate(lines) if re.match(r'gsv-say "', line)), None)
    assert say is not None, "the README's service block no longer says a text with gsv-say"
    wait = [
        "echo '@@ waiting for the WAV (test)' >&2",
        f"timeout 300 bash -c 'until [ -s {wav} ]; do sleep 1; done'; sleep 1",
    ]
    return "\n".join(lines[: say + 1] + wait + lines[say + 1 :]) + "\n"


def destroy_race(output: str, leftovers: list[str]) -> bool:
    """dora 1.1's ``dora down`` (the block's last line) can exit 1 with "WS connection closed" when
    the coordinator it told to destroy itself closes the connection before answering (seen on a
    loaded machine). The coordinator did go down: accepted only when that is the block's last
    output and no process of the graph is left."""
    tail = output[output.rfind("Destroying coordinator") :] if "Destroying coordinator" in output else ""
    return not leftovers and "failed to send control request" in tail and "WS connection closed" in tail


def marked_processes(token: str) -> list[str]:
    """Processes (dora's coordinator and daemon, the nodes) whose environment carries the test's token."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"GSV_README_TEST={token}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:120].decode(errors="replace")
                found.append(f"{proc.name} {command}")
        except OSError:
            continue
    return found


def lingering(token: str, seconds: float) -> list[str]:
    """The token's processes still alive after up to ``seconds`` (they may take a moment to exit)."""
    deadline = time.monotonic() + seconds
    while (found := marked_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def own_home(tmp_path: Path) -> Path:
    """A HOME of the test's own: `dora up` keeps its coordinator's store in ~/.dora, which a second
    coordinator on the machine (another graph under test) holds locked. ~/.cache is shared, for the
    built C++ kernels (and official weights, where a developer has them)."""
    home = tmp_path / "home"
    home.mkdir()
    cache = Path.home() / ".cache"
    cache.mkdir(exist_ok=True)
    (home / ".cache").symlink_to(cache)
    return home


def borrow_venv(venv: Path, clone: Path) -> None:
    """``clone/.venv``: links to the test's venv, with setup_env.sh's mark that it is installed for the
    clone's pyproject.toml, so the block installs nothing and writes nothing into the borrowed venv."""
    own = clone / ".venv"
    own.mkdir()
    for entry in venv.iterdir():
        if not entry.name.startswith("."):
            (own / entry.name).symlink_to(entry)
    digest = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (own / f".installed-{digest}-test").touch()


def sink_log_lines(clone: Path) -> list[str]:
    return [
        str(json.loads(line).get("msg", ""))
        for path in (clone / "dataflows" / "out").glob("*/log_audio-sink.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("{")
    ]


def test_readme_service_block_runs_as_written_in_a_fresh_clone(tmp_path):
    clone = (tmp_path / "clone").resolve()
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    venv = Path(sys.prefix)
    borrow_venv(venv, clone)
    token = uuid.uuid4().hex
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p).resolve() != (venv / "bin").resolve()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GSV_") and k != "VIRTUAL_ENV"}
    env.update(
        HOME=str(own_home(tmp_path)),
        PATH=os.pathsep.join(path),
        DORA_COORDINATOR_PORT=COORDINATOR_PORT,
        GSV_SINK="wav",  # no speaker here (and none wanted on a developer's machine)
        GSV_THREADS="1",  # seven processes on two cores
        GSV_README_TEST=token,
        HF_HUB_OFFLINE="1",
    )
    wav = clone / "out" / "speech.wav"
    script = with_wav_wait(service_block((clone / "README.md").read_text(encoding="utf-8")), "out/speech.wav")
    log = tmp_path / "block.log"
    with log.open("w") as out:
        shell = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = shell.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            rc = None
        finally:
            leftovers = lingering(token, seconds=20)
            if leftovers:  # clean up for the next test before asserting anything
                subprocess.run(["dora", "down", "--force"], cwd=clone, env=env | {"PATH": f"{venv}/bin"}, timeout=60)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert rc == 0 or destroy_race(output, leftovers), f"the block failed (exit {rc}); its output:\n{output[-6000:]}"
    assert "waiting for the graph: text-input on 127.0.0.1:9871" in output, output[-3000:]
    samples, rate = sf.read(wav, dtype="float32")
    assert rate == 32000 and len(samples) > 0.5 * rate and np.sqrt(np.mean(samples**2)) > 1e-3
    assert not (clone / "dataflows" / "out" / "speech.wav").exists()
    assert any(f"wrote {wav}" in line for line in sink_log_lines(clone)), sink_log_lines(clone)[-20:]
    assert not leftovers, f"processes left after `dora stop` and `dora down`: {leftovers}"
