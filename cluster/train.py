"""``python -m cluster.train --config FILE [--set key=value ...] [--resume auto|PATH]``."""

from __future__ import annotations

import argparse
import logging
import sys

from cluster.config import ConfigError, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.train", description="Train SAC with dmsac.")
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/vehicle.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set learner.lr=1e-5 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--resume", default=None, metavar="auto|PATH", help="resume from last_good (auto) or a checkpoint")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        sys.stderr.write(f"config error: {err}\n")
        return 2
    if config.cluster.mode == "local":
        from cluster.local import run_local

        run_local(config)
        return 0
    from cluster.ray_driver import run_ray

    return run_ray(config, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
