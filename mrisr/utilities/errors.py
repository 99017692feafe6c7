"""User-facing errors: raised for bad input, printed by the CLI as one line."""


class MrisrError(Exception):
    """A mistake in the user's input or environment, reported as one line, exit code 2."""


class IntegrityError(MrisrError):
    """A raw dataset that fails the integrity check."""
