"""voxelpipe: the shared domain package of the pipeline (shipped to Lambda as a layer)."""

__version__ = "0.1.0"
