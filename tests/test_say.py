"""gsv-say: waits for the graph's text-input to listen (saying for what), then sends one JSON line."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from dora_gpt_sovits import say
from dora_gpt_sovits.benchmark.dataflow import free_port


def listen_later(port: int, delay: float, received: list[bytes]) -> threading.Thread:
    """A stand-in text-input that starts listening only after ``delay`` seconds (the graph loading)."""

    def serve() -> None:
        time.sleep(delay)
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(10)
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as reader:
                received.append(reader.readline())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_say_waits_for_a_listener_that_comes_up_late_and_says_what_it_waits_for(capsys):
    port, received = free_port(), []
    listener = listen_later(port, 1.0, received)
    started = time.monotonic()
    say.main(["你好。", "--address", f"127.0.0.1:{port}", "--voice", "alice", "--wait", "20"])
    listener.join(10)
    assert time.monotonic() - started >= 0.9
    assert json.loads(received[0]) == {"text": "你好。", "voice": "alice"}
    assert f"waiting for the graph: text-input on 127.0.0.1:{port}" in capsys.readouterr().err


def test_stop_is_sent_as_a_control_line_to_a_listening_graph_without_a_wait_note(capsys):
    port, received = free_port(), []
    listener = listen_later(port, 0.0, received)
    time.sleep(0.3)
    say.main(["--stop", "--id", "u1", "--address", f"127.0.0.1:{port}"])
    listener.join(10)
    assert json.loads(received[0]) == {"control": "stop", "utterance_id": "u1"}
    assert capsys.readouterr().err == ""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def refused(address, timeout):
    raise ConnectionRefusedError(111, "Connection refused")


def test_the_wait_ends_after_its_time_naming_the_address_and_what_to_check():
    clock, notes = FakeClock(), []
    with pytest.raises(say.NotListening) as caught:
        say.connect_when_listening(say.Address("127.0.0.1", 9871), 40, notes.append, refused, clock, clock.sleep)
    message = str(caught.value)
    assert "nothing listens on 127.0.0.1:9871 after 40 s" in message and "dora list" in message
    assert "dora logs" in message
    assert clock.now == pytest.approx(40) and max(clock.sleeps) <= say.RETRY_S
    # one line when the wait starts, then one per NOTE_EVERY_S: a wait that shows it is alive, not a flood
    assert notes[0].startswith("waiting for the graph: text-input on 127.0.0.1:9871")
    assert [n.split("(")[1] for n in notes[1:]] == ["15 s)", "30 s)"]


def test_wait_zero_tries_once():
    clock = FakeClock()
    with pytest.raises(say.NotListening, match="after 0 s"):
        say.connect_when_listening(say.Address("127.0.0.1", 9871), 0, lambda _: None, refused, clock, clock.sleep)
    assert clock.sleeps == []


def test_an_unresolvable_host_ends_the_wait_at_once():
    def unresolvable(address, timeout):
        raise socket.gaierror(-2, "Name or service not known")

    clock = FakeClock()
    with pytest.raises(say.NotListening, match="cannot resolve 'nohost'"):
        say.connect_when_listening(say.Address("nohost", 1), 300, lambda _: None, unresolvable, clock, clock.sleep)
    assert clock.sleeps == []


def test_nothing_listening_is_one_error_line_and_nothing_sent():
    with pytest.raises(SystemExit) as caught:
        say.main(["你好。", "--address", f"127.0.0.1:{free_port()}", "--wait", "0"])
    assert str(caught.value).startswith("error: nothing listens on 127.0.0.1:")
    assert str(caught.value).endswith("nothing was sent") and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--stop", "hi"], "either a text to say or --stop"),
        ([], "either a text to say or --stop"),
        (["hi", "--wait", "-1"], "--wait must be >= 0"),
        (["hi", "--wait", "nan"], "--wait must be >= 0"),
        (["hi", "--address", "localhost"], "is not host:port"),
        (["hi", "--address", "127.0.0.1:99999"], "is not host:port"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(argv, complaint, capsys):
    with pytest.raises(SystemExit):
        say.main(argv)
    assert complaint in capsys.readouterr().err


def test_an_address_without_a_host_is_the_local_one():
    assert say.parse_address(":9000") == say.Address("127.0.0.1", 9000)
    assert say.parse_address("[::1]:9871") == say.Address("::1", 9871)
    assert str(say.Address("::1", 9871)) == "[::1]:9871"
