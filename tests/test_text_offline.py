"""The frontend works with no network and no NLTK data: nothing is downloaded at run time."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, socket, sys

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = refuse  # any download attempt fails loudly
    socket.create_connection = refuse
    import nltk
    nltk.download = lambda *a, **k: sys.exit("nltk.download called")

    from dora_gpt_sovits.text.frontend import text_to_phones
    segments = text_to_phones("我读了这本书，then I read the zorblax manual again.", "zh", "v2")
    json.dump([[s.language, s.phones] for s in segments], sys.stdout)
""")


def test_frontend_runs_offline_with_empty_nltk_data(tmp_path):
    env = dict(
        os.environ, NLTK_DATA=str(tmp_path), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HOME=str(tmp_path)
    )  # no ~/nltk_data either
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert [lang for lang, _ in runs] == ["zh", "en"]
    assert "Z" in runs[1][1] and "R" in runs[1][1]
