"""The room around a voice assistant: a stand-in for dora-microphone, and the speaker dora-pyaudio plays to.

Speaker: dora-pyaudio writes through ALSA's ``file`` plugin (``format "wav"``) into the FIFO
``ROOM_FIFO``: a WAV header (the rate dora-pyaudio opened its stream at: ``speaker_rate`` in the
report), then int16 mono samples, which this node drains at exactly real time (``ROOM_SPEAKER_RATE``;
its pipe shrunk to one page),
so dora-pyaudio's blocking writes are paced as by a sound card, and keeps the whole timeline of
what was played — silence where nothing came — plus how much had been *written* (read + still in
the pipe) at any moment.

Microphone: 0.1 s blocks of float32 at 16 kHz without metadata, as dora-microphone sends them:
silence, then the user's question (``ROOM_QUESTION``, a 16 kHz WAV) after 1 s, then the barge-in
(``ROOM_BARGE_IN``) once ``ROOM_BARGE_AFTER`` seconds of the reply have played. The run ends after
the reply to the barge-in has played and the speaker stayed silent for 2 s (or ``ROOM_TIMEOUT``).

Input ``timestamp_start`` (dora-vad's): each arrival is logged with the speaker's played and
written positions — where the stop landed in the audio. ``ROOM_REPORT`` (JSON) and
``ROOM_REPORT``.npy (the played timeline) are written at the end.
"""

import fcntl
import json
import os
import termios
import time

import numpy as np
import pyarrow as pa
import soundfile as sf
from dora import Node

F_SETPIPE_SZ = 1031  # Linux: the pipe's buffer, the speaker's hardware buffer here
MIC_RATE, MIC_BLOCK = 16000, 1600
TICK_S = 0.01
AUDIBLE = 200  # int16: above the dither of nothing, far below speech
WAV_HEADER = 44


def speech(path: str) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32")
    assert rate == MIC_RATE, f"{path}: {rate} Hz, the room's microphone takes {MIC_RATE}"
    return samples


class Speaker:
    def __init__(self, fifo: str, rate: int):
        self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.pipe_bytes = fcntl.fcntl(self.fd, F_SETPIPE_SZ, 4096)
        self.rate = rate
        self.started = time.monotonic()
        self.blocks: list[np.ndarray] = []
        self.played = 0  # samples the speaker has consumed (real time since start)
        self.taken = 0  # of them, samples that came from dora-pyaudio
        self.pending = b""
        self.header = b""  # ALSA's WAV header comes first

    def opened_rate(self) -> int | None:
        """The rate in the WAV header dora-pyaudio's stream wrote (None before it opened)."""
        if len(self.header) < WAV_HEADER:
            return None
        assert self.header[:4] == b"RIFF" and self.header[8:12] == b"WAVE", self.header
        return int.from_bytes(self.header[24:28], "little")

    def read_header(self) -> None:
        while len(self.header) < WAV_HEADER:
            try:
                data = os.read(self.fd, WAV_HEADER - len(self.header))
            except BlockingIOError:
                return
            if not data:
                return
            self.header += data

    def run(self) -> np.ndarray:
        """Consume what real time says is due; returns the new part of the timeline."""
        self.read_header()
        due = int((time.monotonic() - self.started) * self.rate) - self.played
        if due <= 0:
            return np.zeros(0, np.int16)
        want = 2 * due - len(self.pending) if len(self.header) == WAV_HEADER else 0
        try:
            data = self.pending + (os.read(self.fd, want) if want > 0 else b"")
        except BlockingIOError:
            data = self.pending
        usable = len(data) // 2 * 2
        self.pending = data[usable:]
        block = np.zeros(due, np.int16)
        got = np.frombuffer(data[:usable], np.int16)
        block[: len(got)] = got  # the rest: nothing was written in time (idle, or an underrun)
        self.played += due
        self.taken += len(got)
        self.blocks.append(block)
        return block

    def written(self) -> int:
        """Samples dora-pyaudio has written so far: consumed, plus what waits in the pipe."""
        waiting = np.zeros(1, np.int32)
        fcntl.ioctl(self.fd, termios.FIONREAD, waiting)
        return self.taken + (len(self.pending) + int(waiting[0])) // 2


def main() -> None:
    node = Node()
    speaker = Speaker(os.environ["ROOM_FIFO"], int(os.environ.get("ROOM_SPEAKER_RATE", "24000")))
    question, barge_in = speech(os.environ["ROOM_QUESTION"]), speech(os.environ["ROOM_BARGE_IN"])
    barge_after = float(os.environ.get("ROOM_BARGE_AFTER", "1.0")) * speaker.rate
    timeout = float(os.environ.get("ROOM_TIMEOUT", "90"))
    started = time.monotonic()
    report: dict = {"pipe_bytes": speaker.pipe_bytes, "timestamp_start": []}
    mic_queue = np.concatenate([np.zeros(MIC_RATE, np.float32), question])
    report["question_at"] = speaker.played  # the mic starts now; the question follows 1 s of silence
    mic_sent = 0
    heard = 0  # audible speaker samples since the question (the reply so far)
    quiet = 0  # speaker samples since the last audible one
    phase = "question"
    while time.monotonic() - started < timeout:
        event = node.next(timeout=TICK_S / 2)
        if event is not None and event["type"] == "INPUT" and event["id"] == "timestamp_start":
            report["timestamp_start"].append({"played": speaker.played, "written": speaker.written()})
        elif event is not None and event["type"] == "STOP":
            break
        block = speaker.run()
        if len(block):
            loud = np.abs(block.astype(np.int32)) > AUDIBLE
            heard += int(loud.sum())
            quiet = len(block) - 1 - int(np.flatnonzero(loud)[-1]) if loud.any() else quiet + len(block)
        if phase == "question" and heard >= barge_after:
            phase = "barge-in"
            report["barge_in_at"] = speaker.played
            report["reply_heard_before_barge_in"] = heard
            mic_queue = np.concatenate([mic_queue[mic_sent:], barge_in])
            mic_sent, heard = 0, 0
        elif (
            phase == "barge-in"
            and mic_sent >= len(mic_queue)
            and heard > 0.3 * speaker.rate
            and quiet > 2 * speaker.rate
        ):
            break
        due = int((time.monotonic() - started) * MIC_RATE / MIC_BLOCK)  # mic blocks by now
        while (sent_blocks := report.setdefault("mic_blocks", 0)) < due:
            block = np.zeros(MIC_BLOCK, np.float32)
            part = mic_queue[mic_sent : mic_sent + MIC_BLOCK]
            block[: len(part)] = part
            mic_sent += MIC_BLOCK
            node.send_output("audio", pa.array(block))
            report["mic_blocks"] = sent_blocks + 1
    report["phase"] = phase
    report["speaker_rate"] = speaker.opened_rate()
    report["played"] = speaker.played
    timeline = np.concatenate(speaker.blocks) if speaker.blocks else np.zeros(0, np.int16)
    np.save(os.environ["ROOM_REPORT"] + ".npy", timeline)
    with open(os.environ["ROOM_REPORT"], "w", encoding="utf-8") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
