"""``python -m cluster.pretrain_encoder``: examples from vehicle episodes, training, held-out metrics, the files."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from actors.context.encoders import CnnEncoder, GridPool
from actors.context.grid import cell_centers
from actors.vehicle import VehicleVectorEnv, population_mean_map
from cluster import pretrain_encoder as pe
from cluster.config import load_config
from tests.conftest import ROOT

SMALL = ["context.mode=dynamics_map", "context.grid_u=12", "context.grid_v=10"]


def test_collect_gives_one_example_per_snapshot_whose_target_is_the_vehicles_true_deviation() -> None:
    config = load_config(ROOT / "configs" / "vehicle.yaml", SMALL)
    context, vehicle = config.context, config.env.vehicle
    u, v = cell_centers(context)
    prior = population_mean_map(vehicle, u, v, num_vehicles=8, seed=1)
    inputs, targets = pe.collect(context, vehicle, prior, count=1, seed=50_000, batch=1, grid=(6, 6))
    assert (inputs.shape, targets.shape) == ((4, 2, 6, 6), (4, 6, 6))  # snapshots at 128, 512, 1024, 2048 steps
    env = VehicleVectorEnv(1, vehicle, seed=50_000)
    env.reset(50_000)
    truth = GridPool((12, 10), (6, 6))(((env.true_dynamics_map(u, v) - prior) / 5.0).astype(np.float32))
    for snapshot in range(4):
        assert torch.equal(targets[snapshot], truth[0])
    confidence = [float(inputs[i, 1].mean()) for i in range(4)]
    assert confidence == sorted(confidence) and 0.0 < confidence[0] < confidence[-1] <= 1.0  # more data, more trust


def ramps() -> tuple[torch.Tensor, torch.Tensor]:
    """16 maps 6 x 6, each a constant in [-1, 1] (one number to carry through the code), confidence 0.5."""
    level = torch.linspace(-1, 1, 16)[:, None, None].expand(16, 6, 6)
    return torch.stack([level, torch.full((16, 6, 6), 0.5)], dim=1), level.clone()


def test_training_is_seeded_and_learns_to_reconstruct() -> None:
    inputs, targets = ramps()
    untrained = pe.evaluate(*pe.train(inputs, targets, (6, 6), (4, 4), 8, epochs=0, seed=0), inputs, targets, 1.0)
    encoder, decoder = pe.train(inputs, targets, (6, 6), (4, 4), 8, epochs=60, seed=0)
    again, _ = pe.train(inputs, targets, (6, 6), (4, 4), 8, epochs=60, seed=0)
    assert not encoder.training and not decoder.training
    first, second = encoder.state_dict(), again.state_dict()
    assert list(first) == list(second) and all(torch.equal(first[name], second[name]) for name in first)
    trained = pe.evaluate(encoder, decoder, inputs, targets, 1.0)
    assert untrained["val_r2_vs_prior"] < 0.0 < 0.5 < trained["val_r2_vs_prior"]


def test_evaluate_reports_rms_errors_in_m_per_s2_and_r2_against_the_prior() -> None:
    targets = torch.full((3, 4, 4), 2.0)
    inputs = torch.stack([torch.ones(3, 4, 4), torch.zeros(3, 4, 4)], dim=1)
    metrics = pe.evaluate(lambda x: x, lambda z: torch.full((3, 4, 4), 1.5), inputs, targets, accel_scale=3.0)
    # errors 0.5 (autoencoder), 2 (prior: zero deviation), 1 (input map); x 3 m/s^2 per unit; 1 - 0.25 / 4
    assert metrics == {
        "val_rmse_ms2": 1.5, "val_prior_rmse_ms2": 6.0, "val_input_map_rmse_ms2": 3.0, "val_r2_vs_prior": 0.9375
    }  # fmt: skip


@pytest.mark.slow
def test_main_writes_an_encoder_the_cnn_context_loads_and_its_sidecar(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "encoders" / "enc.pt"
    monkeypatch.setattr(sys, "argv", [
        "pretrain_encoder", "--out", str(out), "--vehicles", "1", "--val-vehicles", "1", "--epochs", "1",
        "--batch-envs", "1", "--grid", "6", "6", "--channels", "4", "4",
    ])  # fmt: skip
    pe.main()
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert (sidecar["checkpoint"], sidecar["bytes"]) == ("enc.pt", out.stat().st_size)
    assert (sidecar["train_examples"], sidecar["snapshots_per_episode"]) == (4, [128, 512, 1024, 2048])
    assert (sidecar["input_grid"], sidecar["channels"], sidecar["context_dim"]) == ([6, 6], [4, 4], 32)
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["bytes", "total_seconds", "val_rmse_ms2", "val_prior_rmse_ms2", "val_input_map_rmse_ms2",
                             "val_r2_vs_prior"]  # fmt: skip
    assert printed["val_rmse_ms2"] == sidecar["val_rmse_ms2"]
    cnn = ["context.encoder=cnn", f"context.encoder_checkpoint={out}"]
    config = load_config(ROOT / "configs" / "vehicle.yaml", cnn)
    encoder = CnnEncoder(config.context)
    features = encoder.features(np.zeros((1, 2, 100, 100), np.float32))
    assert features.shape == (1, 2 * 6 * 6) and encoder.project(features).shape == (1, 32)
