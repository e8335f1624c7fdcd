"""``python -m cluster.train --config FILE [--set key=value ...] [--resume auto|PATH]``."""

from __future__ import annotations

import argparse
import logging
import sys

from cluster.config import Config, ConfigError, load_config
from cluster.runner import LearnerStartError
from learner.checkpoint import Checkpointer, CheckpointError, checkpoint_root
from learner.metrics import MetricsPortInUseError
from learner.safety import NonFiniteStop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.train", description="Train SAC with dmsac.")
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/vehicle.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set learner.lr=1e-5 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", default=None, metavar="auto|PATH", help="resume from last_good (auto) or a checkpoint"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        sys.stderr.write(f"config error: {err}\n")
        return 2
    try:
        resume = resolve_resume_spec(config, args.resume)
        if config.cluster.mode == "local":
            from cluster.local import run_local

            run_local(config, resume)
            return 0
        from cluster.ray_driver import run_ray

        return run_ray(config, resume=resume)
    except (CheckpointError, MetricsPortInUseError, LearnerStartError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except NonFiniteStop as err:
        sys.stderr.write(f"{err}\n")
        return 4


def resolve_resume_spec(config: Config, spec: str | None) -> str | None:
    """Pick the checkpoint now, in the driver, so a bad ``--resume`` is a clear error before anything starts.

    ``auto`` with no checkpoint at all stays ``auto`` (a fresh start: a restarted job's first attempt).
    """
    if spec is None:
        return None
    checkpointer = Checkpointer(checkpoint_root(config.checkpoint, config.train.run_dir), config.checkpoint.keep_last)
    if spec == "auto" and not checkpointer.entries():
        return "auto"
    path = checkpointer.resolve(spec)
    logging.getLogger("dmsac").info("resuming from %s", path)
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
