"""``fastprop.History``: exported as CSV and JSON and read back."""

from __future__ import annotations

import fastprop


def test_history_exports_csv_and_json(tmp_path):
    history = fastprop.History()
    history.append(cost=0.5, accuracy=0.8, seconds=1.5, samples_per_second=100.0)
    history.append(cost=0.25, accuracy=0.9, seconds=1.0, samples_per_second=150.0)
    csv_text = history.to_csv(tmp_path / "h.csv")
    assert csv_text.splitlines() == [
        "epoch,cost,accuracy,seconds,samples_per_second", "1,0.5,0.8,1.5,100.0", "2,0.25,0.9,1.0,150.0",
    ]
    history.to_json(tmp_path / "h.json")
    assert fastprop.History.from_dict(__import__("json").loads((tmp_path / "h.json").read_text())) == history
