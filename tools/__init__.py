"""Command-line tools around the pipeline: `python -m tools.<name>`."""
