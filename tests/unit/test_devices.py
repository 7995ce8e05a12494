"""train.device and train.precision: the CPU path everywhere, the GPU path where torch sees a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import tiny_settings

from recindex.config import load_config
from recindex.errors import RecIndexError
from recindex.models.devices import check_precision, resolve_device
from recindex.pipelines.experiment import run_experiment

NO_GPU = not torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(NO_GPU, reason="no GPU: torch.cuda.is_available() is False on this machine")
DATASET = "synthetic:n_users=200,n_items=80,seed=7"


def test_device_settings_resolve_or_say_what_is_wrong():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cpu" if NO_GPU else "cuda")
    with pytest.raises(RecIndexError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if NO_GPU:
        with pytest.raises(RecIndexError, match="torch sees no GPU"):
            resolve_device("cuda:0")


def test_mixed_precision_is_refused_on_the_cpu():
    check_precision("fp32", torch.device("cpu"))
    with pytest.raises(RecIndexError, match="autocast on a GPU; this run is on cpu"):
        check_precision("bf16", torch.device("cpu"))
    config = load_config(None, [*tiny_settings(DATASET), 'train.device="cpu"', 'train.precision="fp16"'])
    with pytest.raises(RecIndexError, match="train.precision = 'fp16'"):
        run_experiment(config, None, progress=False)
    with pytest.raises(RecIndexError, match="'fp8' is not one of"):
        load_config(None, ['train.precision="fp8"'])


def _trained(device: str, *extra: str):
    config = load_config(None, [*tiny_settings(DATASET, epochs=2), f'train.device="{device}"', *extra])
    return run_experiment(config, None, progress=False)


@needs_gpu
def test_a_gpu_run_trains_evaluates_and_hands_back_a_cpu_model_near_the_cpu_run():
    cpu, gpu = _trained("cpu"), _trained("cuda")
    assert next(gpu.model.parameters()).device.type == "cpu"
    assert abs(cpu.test["recall@10"] - gpu.test["recall@10"]) <= 0.05


@needs_gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_on_the_gpu_trains_to_finite_losses(precision):
    run = _trained("cuda", f'train.precision="{precision}"', 'train.negatives="full"')
    assert all(np.isfinite(record["loss"]) for record in run.training.history)
    assert run.test["recall@10"] > 0


@needs_gpu
def test_evaluation_on_the_gpu_matches_the_cpu():
    from recindex.eval.evaluate import evaluate_split

    run = _trained("cpu")
    on_cpu = evaluate_split(run.model, run.split, "test", run.config)
    on_gpu = evaluate_split(run.model.to("cuda"), run.split, "test", run.config)
    run.model.cpu()
    assert on_gpu == pytest.approx(on_cpu, abs=1e-3)


@needs_gpu
def test_the_service_encodes_queries_on_the_gpu_when_told_to(tiny_bundle):
    from recindex.pipelines import load_bundle
    from recindex.serve import recommender

    bundle = load_bundle(tiny_bundle(DATASET))
    history = bundle.data.sequence(0)
    on_cpu = recommender.encode_history(bundle, history, 0)
    recommender.set_query_device("cuda")
    try:
        on_gpu = recommender.encode_history(bundle, history, 0)
    finally:
        recommender.set_query_device("cpu")
    assert next(bundle.model.parameters()).device.type == "cpu"  # the bundle itself stays put
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)
