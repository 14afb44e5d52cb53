"""Pronunciations for words missing from the dictionary: g2p_en's neural predictor.

g2p_en ships a small GRU encoder-decoder checkpoint (`checkpoint20.npz`). Importing g2p_en
itself would try to download NLTK data, so the checkpoint is located through the package's
import spec and run by this module's own numpy implementation of the network.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from .symbols import ARPA_CONSONANTS, ARPA_VOWELS

GRAPHEMES = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
START, END = 2, 3  # phoneme-vocabulary ids of <s> and </s>
MAX_PHONES = 20


def predictor_phonemes() -> list[str]:
    """Output vocabulary: specials, then the sorted ARPAbet set including a stressless UW."""
    stressed = [v + s for v in ARPA_VOWELS for s in "012"]
    return ["<pad>", "<unk>", "<s>", "</s>"] + sorted(stressed + list(ARPA_CONSONANTS) + ["UW"])


def checkpoint_path() -> str:
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the g2p_en package (which ships the OOV predictor) is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "checkpoint20.npz")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


class GruWeights:
    def __init__(self, w: dict, prefix: str):
        self.w_ih, self.w_hh = w[prefix + "_w_ih"], w[prefix + "_w_hh"]
        self.b_ih, self.b_hh = w[prefix + "_b_ih"], w[prefix + "_b_hh"]

    def step(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        """One GRU step (PyTorch gate layout: reset, update, candidate)."""
        gi = x @ self.w_ih.T + self.b_ih
        gh = h @ self.w_hh.T + self.b_hh
        size = h.shape[-1]
        reset, update = np.split(_sigmoid(gi[:, : 2 * size] + gh[:, : 2 * size]), 2, axis=-1)
        candidate = np.tanh(gi[:, 2 * size :] + reset * gh[:, 2 * size :])
        return (1 - update) * candidate + update * h


class NeuralG2p:
    def __init__(self, path: str | None = None):
        weights = dict(np.load(path or checkpoint_path()))
        self.enc_emb, self.dec_emb = weights["enc_emb"], weights["dec_emb"]
        self.encoder, self.decoder = GruWeights(weights, "enc"), GruWeights(weights, "dec")
        self.fc_w, self.fc_b = weights["fc_w"], weights["fc_b"]
        self.phonemes = predictor_phonemes()
        self.grapheme_ids = {g: i for i, g in enumerate(GRAPHEMES)}

    def encode(self, word: str) -> np.ndarray:
        ids = [self.grapheme_ids.get(c, 1) for c in list(word) + ["</s>"]]
        h = np.zeros((1, self.encoder.w_hh.shape[1]), np.float32)
        for i in ids:
            h = self.encoder.step(self.enc_emb[[i]], h)
        return h

    def predict(self, word: str) -> list[str]:
        """Greedy decoding, at most 20 phones."""
        h = self.encode(word)
        token = START
        phones = []
        for _ in range(MAX_PHONES):
            h = self.decoder.step(self.dec_emb[[token]], h)
            token = int(np.argmax(h @ self.fc_w.T + self.fc_b))
            if token == END:
                break
            phones.append(self.phonemes[token])
        return phones


@functools.lru_cache(maxsize=1)
def neural_g2p() -> NeuralG2p:
    return NeuralG2p()
