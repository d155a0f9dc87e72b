"""The one error type tasks turn into a clear message and a non-zero exit."""


class StackError(Exception):
    """A failure the user can act on; the message says what was wrong and what to do."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
