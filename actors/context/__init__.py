"""Per-environment context providers (the dynamics map and the empty context)."""

from actors.context.base import ContextProvider, NoContext
from actors.context.buffer import GRAVITY, SampleBuffer, decay_weights, gravity_compensated
from actors.context.config import ContextConfig
from actors.context.encoders import CnnEncoder, Encoder, PooledEncoder
from actors.context.grid import cell_centers, cell_index
from actors.context.provider import DynamicsMapContext
from actors.context.reconstruction import MapEstimate, Reconstruction, SmoothedCellMeans, reconstruct_dense

__all__ = [
    "GRAVITY",
    "CnnEncoder",
    "ContextConfig",
    "ContextProvider",
    "DynamicsMapContext",
    "Encoder",
    "MapEstimate",
    "NoContext",
    "PooledEncoder",
    "Reconstruction",
    "SampleBuffer",
    "SmoothedCellMeans",
    "cell_centers",
    "cell_index",
    "decay_weights",
    "gravity_compensated",
    "reconstruct_dense",
]
