"""The one error type users see: a single actionable line, never a traceback."""


class UserError(Exception):
    """Bad input or an unsupported file. `str(err)` is the whole message shown to the user."""


class CheckpointError(UserError):
    """A model file that cannot be read or is not a supported Stable Diffusion checkpoint."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
