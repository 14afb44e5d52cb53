"""The error every text-frontend failure is reported with."""


class FrontendError(ValueError):
    """Input the text frontend cannot turn into phones (empty text, unknown language...)."""
