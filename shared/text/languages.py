"""Which module speaks which language, imported only when a text needs it.

Every language module beside Chinese and English (``japanese``, ``korean``, ``cantonese``) offers:

    normalize(text: str) -> str
    g2p(norm_text: str, version: str) -> tuple[list[str], list[int] | None]   # phones, word2ph

and raises :class:`MissingLanguagePackage` when the package it needs is not installed. A module file
that does not exist (yet) makes its language "not supported" with a clear error, never a traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from .errors import FrontendError, MissingLanguagePackage


@dataclass(frozen=True)
class LanguageInfo:
    code: str
    name: str
    module: str  # file in this package
    extra: str  # pyproject extra that installs its packages
    packages: tuple[str, ...]


LANGUAGES = {
    "ja": LanguageInfo("ja", "Japanese", "japanese", "ja", ("pyopenjtalk-plus",)),
    "ko": LanguageInfo("ko", "Korean", "korean", "ko", ("g2pk2", "jamo", "ko-pron", "python-mecab-ko")),
    "yue": LanguageInfo("yue", "Cantonese", "cantonese", "yue", ("ToJyutping",)),
}


class LanguageNotAvailable(FrontendError):
    """A language whose module is not part of this installation."""


def language_module(code: str) -> ModuleType:
    """The module for ``code`` ('ja', 'ko', 'yue'); raises FrontendError subclasses, one line each."""
    info = LANGUAGES.get(code)
    if info is None:
        raise LanguageNotAvailable(f"no frontend module for language {code!r}")
    qualified = f"{__package__}.{info.module}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as e:
        if e.name == qualified:
            raise LanguageNotAvailable(f"{info.name} ({code!r}) is not supported by this version yet") from None
        # A module that let its package's ImportError through: still one clear line.
        raise MissingLanguagePackage(info.name, info.extra, e.name) from None


def missing_package(code: str, package: str | None = None) -> MissingLanguagePackage:
    info = LANGUAGES[code]
    return MissingLanguagePackage(info.name, info.extra, package)
