"""Record the windows a training run feeds its model (shared by the training tests)."""

from __future__ import annotations

from bolt.train import training


def record_windows(patch) -> list[list[int]]:
    """Wrap ``training.window_stream`` through ``patch`` (a monkeypatch or its context); return the list it fills."""
    seen: list[list[int]] = []
    real_stream = training.window_stream

    def recording(documents, cfg, markers):
        for window in real_stream(documents, cfg, markers):
            seen.append(window)
            yield window

    patch.setattr(training, "window_stream", recording)
    return seen
