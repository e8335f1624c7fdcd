"""The per-step reward of the vehicle task (spec weights; every term active)."""

from __future__ import annotations

import numpy as np

from actors.vehicle.config import RewardConfig


def reward(
    v: np.ndarray,
    v_ref: np.ndarray,
    u: np.ndarray,
    u_prev: np.ndarray,
    brake_torque: np.ndarray,
    jerk: np.ndarray,
    cfg: RewardConfig,
) -> np.ndarray:
    """``r = − w_track (v − v_ref)² − w_action |u| − w_brake |T_brake| − w_jerk |jerk| − w_smooth |u − u_prev|
    − w_neg_speed max(0, −v) − w_stop (|v| [v_ref = 0] + [v_ref = 0 ∧ u > 0])``, clipped to ``±clip``.

    ``v`` is the true speed after the step, ``v_ref`` the reference at that time,
    ``brake_torque`` the actual (lagged) brake torque at the wheels in N·m and
    ``jerk`` the change of the step acceleration per second.
    """
    stopped_ref = v_ref <= 0.0
    cost = cfg.w_track * (v - v_ref) ** 2
    cost += cfg.w_action * np.abs(u)
    cost += cfg.w_brake * np.abs(brake_torque)
    cost += cfg.w_jerk * np.abs(jerk)
    cost += cfg.w_smooth * np.abs(u - u_prev)
    cost += cfg.w_neg_speed * np.maximum(-v, 0.0)
    cost += cfg.w_stop * stopped_ref * (np.abs(v) + (u > 0.0))
    return np.clip(-cost, -cfg.clip, cfg.clip)
