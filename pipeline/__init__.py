"""Shared building blocks of the pipeline stages; one concept per module."""
