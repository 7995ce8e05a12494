"""The training progress display: what stays on screen once training ends."""

import io

import pytest
from rich.console import Console

from recindex.progress import TrainingProgress


@pytest.mark.parametrize("epochs_run", [3, 2], ids=["all epochs", "early stop"])
def test_no_batches_line_is_left_after_training(epochs_run):
    screen = io.StringIO()
    # Not a terminal: the display is not animated, and only its last frame is written, once.
    console = Console(file=screen, force_terminal=False, width=120)
    with TrainingProgress(3, 4, console=console) as bar:
        for epoch in range(1, epochs_run + 1):
            for _ in range(4):
                bar.advance_batch(0.5)
            bar.end_epoch({"epoch": float(epoch), "loss": 0.5, "valid_recall@10": 0.25})
    lines = [line for line in screen.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("epochs") and f"{epochs_run}/3" in lines[0] and "valid R@10 0.2500" in lines[0]
