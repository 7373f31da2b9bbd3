"""The errors a stage reports as one line instead of a traceback."""


class PipelineError(Exception):
    """Bad params, bad input or a missing resource; the message names the param, file or line."""


class RetryableError(PipelineError):
    """A failure that running the stage again may not repeat (a dropped network stream): work done so far is
    kept for the next run to continue from."""
