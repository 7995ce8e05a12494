"""One data-parallel optimizer step against one single-process step on the same global batch.

Two gloo ranks (subprocesses with torchrun's environment, one thread each) each take half of a global
batch of 64 users, whose halves hold unequal numbers of training positions (every position of a
sequence is an example, and one rank's users are the longer of each pair). With the negatives gathered,
the gradients DDP leaves on every rank must be the single process's on the whole batch, to float
tolerance, for the sampled softmax with logQ correction, the mixed negatives and the exact softmax.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.integration.ddp_step_setup import CASES, step_gradients
from tests.integration.test_distributed_training import _environment

WORKER = Path(__file__).with_name("ddp_step_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Both ranks' steps of every case (one pair of processes for the module's tests)."""
    return _two_ranks(tmp_path_factory.mktemp("ranks"))


def _two_ranks(out: Path) -> list[dict]:
    environment = _environment({"WORLD_SIZE": "2"})
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out)],
            env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for rank in ranks:
        _, errors = rank.communicate(timeout=120)
        assert rank.returncode == 0, errors[-3000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def _assert_close(got: dict, expected: dict) -> None:
    for name in expected:
        torch.testing.assert_close(
            got[name], expected[name], rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_a_gathered_ddp_step_is_the_single_process_step_on_the_global_batch(ranks):
    zero, one = ranks
    for case in CASES:
        # the halves differ in positions, so a per-rank mean weighs them wrongly unless corrected
        assert zero[case]["positions"] != one[case]["positions"], case
        # DDP leaves the same averaged gradients on both ranks
        for name, gradient in zero[case]["gradients"].items():
            assert torch.equal(gradient, one[case]["gradients"][name]), (case, name)
    for case in ("in_batch_gathered", "mixed_gathered", "full"):
        single, positions, loss = step_gradients(case)
        assert positions == zero[case]["positions"] + one[case]["positions"]
        _assert_close(zero[case]["gradients"], single)
        # the mean over the ranks of their weighted losses is the global batch's loss
        assert (zero[case]["loss"] + one[case]["loss"]) / 2 == pytest.approx(loss, rel=1e-5)
    # The hinge is a mean over (query, negative) pairs, not positions: a row's pairs are the candidates
    # less its accidental hits, so weighting by positions is close to the global mean, not exact.
    single, _, _ = step_gradients("hinge_gathered")
    for name in single:
        torch.testing.assert_close(
            zero["hinge_gathered"]["gradients"][name], single[name], rtol=0.02, atol=2e-5
        )


def test_a_local_ddp_step_is_the_position_weighted_mean_of_its_shares_trained_apart(ranks):
    """Without gathering, each rank's queries see its own share's positives as negatives: a different
    objective from one process's, whose gradient is that of each share trained alone, weighted by its
    positions (logQ off here: its estimate is fed per share, which two lone processes cannot repeat)."""
    zero, _ = ranks
    shares = [step_gradients("in_batch_local", rows=slice(rank, None, 2)) for rank in range(2)]
    assert [positions for _, positions, _ in shares] == [zero["in_batch_local"]["positions"], shares[1][1]]
    total = shares[0][1] + shares[1][1]
    expected = {
        name: (shares[0][0][name] * shares[0][1] + shares[1][0][name] * shares[1][1]) / total
        for name in shares[0][0]
    }
    _assert_close(zero["in_batch_local"]["gradients"], expected)
    gathered, _, _ = step_gradients("in_batch_gathered")
    assert not torch.allclose(
        zero["in_batch_local"]["gradients"]["item_tower.ids.weight"], gathered["item_tower.ids.weight"]
    )


def test_rank_zero_decides_when_a_checkpoint_is_due_by_minutes(ranks):
    """The ranks' clocks differ; rank 0's decides for both: due when a minute passed on rank 0's clock
    (rank 1's says 30 s), not due when only rank 1's did."""
    assert [rank["checkpoint_due"] for rank in ranks] == [[True, False], [True, False]]
