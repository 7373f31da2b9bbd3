"""The errors a stage reports as one line instead of a traceback."""


class PipelineError(Exception):
    """Bad params, bad input or a missing resource; the message names the param, file or line."""
