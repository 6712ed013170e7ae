"""sparkvision: Spark pipelines for deep vision at scale."""

__version__ = "0.1.0"
