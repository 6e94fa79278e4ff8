"""``History``: what ``train`` measured, epoch by epoch, with CSV and JSON export."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields

from .files import write_text_atomically


@dataclass
class History:
    """Per-epoch training cost (the mean over batches of the mean cost per element, as ``train``
    prints it), validation accuracy, seconds and samples/s."""

    cost: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    samples_per_second: list = field(default_factory=list)

    def append(self, **values) -> None:
        for column in fields(self):
            getattr(self, column.name).append(float(values[column.name]))

    def __len__(self) -> int:
        return len(self.cost)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path=None) -> str:
        """The history as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            write_text_atomically(path, text + "\n", "history")
        return text

    def to_csv(self, path=None) -> str:
        """One row per epoch (``epoch,cost,accuracy,seconds,samples_per_second``); written to
        ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        names = [column.name for column in fields(self)]
        writer.writerow(["epoch", *names])
        for epoch, row in enumerate(zip(*(getattr(self, name) for name in names)), start=1):
            writer.writerow([epoch, *(repr(value) for value in row)])
        if path is not None:
            write_text_atomically(path, buffer.getvalue(), "history")
        return buffer.getvalue()

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(**{column.name: list(map(float, data.get(column.name, []))) for column in fields(cls)})
