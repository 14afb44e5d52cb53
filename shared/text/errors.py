"""The errors every text-frontend failure is reported with."""

from __future__ import annotations


class FrontendError(ValueError):
    """Input the text frontend cannot turn into phones (empty text, unknown language...)."""


class MissingLanguagePackage(FrontendError):
    """A language's optional package is not installed; the message is one line naming the extra.

    ``MissingLanguagePackage("Japanese", "ja")`` reads
    "Japanese text needs the 'ja' extra: pip install -e '.[ja]'"; a single argument is taken as the
    whole message.
    """

    def __init__(self, language: str, extra: str | None = None, package: str | None = None):
        if extra is None:
            message = language
        else:
            needs = f" ({package})" if package else ""
            message = f"{language} text needs the '{extra}' extra{needs}: pip install -e '.[{extra}]'"
        super().__init__(message)
        self.language = language
        self.extra = extra
