"""The one error type of the data pipeline."""

from __future__ import annotations


class DataError(ValueError):
    """A data source, record, tokenizer or loader setting that the pipeline cannot use.

    The message is one line naming the file, dataset or field at fault.
    """
