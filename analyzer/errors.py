"""One exception tree for nicpath; the CLI translates it into a one-line message and exit 2."""

from __future__ import annotations


class NicpathError(Exception):
    """Base of every error nicpath raises on purpose."""


class CollectError(NicpathError):
    """``nicpath collect`` cannot start, or could not undo a change it made: says what to do."""


class InputError(NicpathError):
    """An input file cannot be read: says which file and, where known, which record and where.

    `record` is the 1-based packet number (captures) or line number (logs); `offset` the byte
    offset in the (decompressed) file.
    """

    def __init__(
        self,
        path: str,
        message: str,
        *,
        record: int | None = None,
        offset: int | None = None,
        unit: str = "packet",
    ) -> None:
        self.path = str(path)
        self.message = message
        self.record = record
        self.offset = offset
        self.unit = unit
        super().__init__(str(self))

    def __reduce__(self):
        """Picklable, so an error in a ``--jobs`` worker reaches the user unchanged."""
        kwargs = {"record": self.record, "offset": self.offset, "unit": self.unit}
        return (_rebuild_input_error, (self.path, self.message, kwargs))

    def __str__(self) -> str:
        where = [self.path]
        if self.record is not None:
            where.append(f"{self.unit} {self.record}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        return f"{', '.join(where)}: {self.message}"


class NoRows(InputError):
    """The inputs hold no packet and no LOG line (an idle card's capture): nothing to analyze,
    though an event table of no row, or a count of nothing, is an answer."""


class QueryError(NicpathError):
    """A question nicpath cannot answer as asked: a malformed address, a card the snapshot does
    not have, a time before any snapshot. The message says what to change."""


def _rebuild_input_error(path: str, message: str, kwargs: dict) -> InputError:
    return InputError(path, message, **kwargs)
