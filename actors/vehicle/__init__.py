"""The randomized electric-vehicle speed-tracking environment (the default dmsac job).

Two tasks ship: ``configs/vehicle.yaml`` (the spec's defaults) and ``configs/vehicle_agile.yaml``, the same
vehicles with references that use 90 % of each vehicle's capability and tracking weighted 10x, with the PID
retuned for it. The second exists because the first does not reward knowing the vehicle: its return is mostly
comfort and energy cost (``bench/task_headroom.py``; README "Does the context pay?").

The agent's action is the command itself (``env.vehicle.action: direct``) or a bounded correction to a base
controller's command (``actors/vehicle/residual.py``): the PID (``residual_pid``), or the map controller of
``map_control.py`` inverting the acceleration map the run's context knows (``residual_map``: the true map for the
``oracle`` context, the online estimate for ``dynamics_map``).

Importing this package registers the single-vehicle gymnasium environment
``dmsac/Vehicle-v0``.
"""

from __future__ import annotations

from actors.vehicle.config import VehicleConfig
from actors.vehicle.dynamics_map import dynamics_map, population_maps, population_mean_map
from actors.vehicle.env import VehicleVectorEnv
from actors.vehicle.gym_wrapper import GYM_ID, VehicleGymEnv, register_gym_env
from actors.vehicle.params import SamplingError, VehicleParams

register_gym_env()

__all__ = [
    "GYM_ID",
    "SamplingError",
    "VehicleConfig",
    "VehicleGymEnv",
    "VehicleParams",
    "VehicleVectorEnv",
    "dynamics_map",
    "population_maps",
    "population_mean_map",
]
