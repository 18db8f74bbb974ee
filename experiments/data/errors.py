"""The one exception the data pipelines raise for files that are missing, corrupt or unreachable."""

from __future__ import annotations


class DatasetUnavailableError(FileNotFoundError):
    """Dataset files are missing, corrupt, laid out wrongly or could not be downloaded.

    The message always says which files are expected where and how to obtain them.
    """
