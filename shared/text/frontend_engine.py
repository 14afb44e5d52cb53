"""The text frontend as a library engine: text -> sentence segments of phones, and a voice's prompt
text -> its phones (upstream's final-punctuation rule), with the model version's symbol table.

``nodes/text_frontend.py`` serves it (its Stage adds the message handling: voices, the window,
stops); the benchmark and any in-process user call it directly.
"""

from __future__ import annotations

from collections.abc import Iterator

from .frontend import PhoneSegment, text_to_phones
from .segment_limits import segment_text

PROMPT_END_MARKS = "，。？！,.?!~:：—…"


def symbol_version(model_version: str) -> str:
    """The symbol table of a GPT-SoVITS version: v1's, or v2's (v2, v2Pro, v2ProPlus)."""
    return "v1" if model_version == "v1" else "v2"


def end_with_period(text: str, language: str) -> str:
    """Upstream appends a full stop to a prompt text lacking final punctuation so the prompt ends cleanly."""
    text = text.strip("\n")
    if text and text[-1] not in PROMPT_END_MARKS:
        text += "。" if language != "en" else "."
    return text


def prompt_phones(text: str, language: str, version: str) -> list[PhoneSegment]:
    """A voice's prompt text as phone runs (none for a reference-free voice)."""
    if not text.strip():
        return []
    return text_to_phones(end_with_period(text, language), language, version)


def warm_up(version: str) -> None:
    """Load the segmenter and dictionaries now, not on the first request (seconds of TTFA)."""
    text_to_phones("你好，世界。", "zh", version)
    text_to_phones("Hello world, zorblatt.", "en", version)  # an out-of-vocabulary word loads the G2P model


class FrontendEngine:
    """``model_version`` (GSV_VERSION) picks the symbol table; ``split_method`` is upstream's cut0-cut5."""

    def __init__(self, model_version: str = "v2", split_method: str = "cut5"):
        self.version = symbol_version(model_version)
        self.split_method = split_method
        self._prompts: dict[tuple[str, str], list[PhoneSegment]] = {}

    def segments(self, text: str, language: str) -> Iterator:
        """The text's sentence segments (``text.segment_limits``: each fits BERT and the GPT), converted
        one at a time as they are asked for."""
        return iter(segment_text(text, language, self.version, self.split_method))

    def prompt_phones(self, text: str, language: str) -> list[PhoneSegment]:
        """:func:`prompt_phones`, cached per (text, language)."""
        key = (text, language)
        if key not in self._prompts:
            self._prompts[key] = prompt_phones(text, language, self.version)
        return self._prompts[key]

    def warm_up(self) -> None:
        warm_up(self.version)
