"""``python -m cluster.train --config FILE [--set key=value ...] [--resume auto|PATH]``."""

from __future__ import annotations

import argparse
import logging
import sys

from cluster.config import Config, ConfigError, config_help, load_config, run_configs, with_overrides
from cluster.factory import probe_dimensions
from cluster.runner import exit_code_for
from learner.checkpoint import Checkpointer, checkpoint_root
from learner.types import ConfigValueError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.train", description="Train SAC with dmsac.")
    parser.add_argument("--config", help="YAML config, e.g. configs/vehicle.yaml (required)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set learner.lr=1e-5 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", default=None, metavar="auto|PATH", help="resume from last_good (auto) or a checkpoint"
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--help-config", action="store_true", help="print every config key with its type, default and meaning, and exit"
    )
    args = parser.parse_args(argv)
    if not args.config and not args.help_config:
        parser.error("the following arguments are required: --config")
    return args


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done or stopped cleanly, 2 config/checkpoint/start-up error, 3 the cluster cannot serve the job,
    4 stopped on a non-finite update, 130 a second Ctrl-C/SIGTERM (README, "Progress, stopping, exit codes")."""
    args = parse_args(argv)
    if args.help_config:
        sys.stdout.write("\n".join(config_help()) + "\n")
        return 0
    setup_logging(args.log_level)
    try:
        config = load_config(args.config, args.overrides)
        check_environment(config, args)
        resume = resolve_resume_spec(config, args.resume)
        if config.cluster.mode == "local":
            from cluster.local import run_local as run
        else:
            from cluster.ray_driver import run_ray as run
        run(config, resume)
        return 0
    except BaseException as err:
        code = exit_code_for(err)
        if code == 1:
            raise
        prefix = {2: "config error" if isinstance(err, ConfigError) else "error", 4: "", 130: "stopped"}.get(code, "error")
        message = str(err) or "interrupted before training started"
        sys.stderr.write(f"{prefix}: {message}\n" if prefix else f"{message}\n")
        return code


def check_environment(config: Config, args: argparse.Namespace) -> None:
    """Build, reset and step one environment before anything starts: a bad ``env.id`` is a config error (exit 2)."""
    source = with_overrides(args.config, args.overrides)
    for k, run_config in enumerate(run_configs(config, source)):
        try:
            probe_dimensions(run_config)
        except ConfigValueError as err:
            where = f"{source}, train.run_overrides[{k}]" if config.train.run_overrides else source
            raise ConfigError(where, err.key, err.message) from None


def resolve_resume_spec(config: Config, spec: str | None) -> str | None:
    """Pick the checkpoint now, in the driver, so a bad ``--resume`` is a clear error before anything starts.

    ``auto`` with no checkpoint at all stays ``auto`` (a fresh start: a restarted job's first attempt).
    """
    if spec is None:
        return None
    if config.train.parallel_runs > 1:
        if spec != "auto":
            raise ConfigError("--resume", spec, "train.parallel_runs > 1: each run resumes from its own last good "
                              "checkpoint with --resume auto (or resume one run alone: its runs/<k>/config.yaml)")  # fmt: skip
        return "auto"
    checkpointer = Checkpointer(checkpoint_root(config.checkpoint, config.train.run_dir), config.checkpoint.keep_last)
    if spec == "auto" and not checkpointer.entries():
        return "auto"
    path = checkpointer.resolve(spec)
    logging.getLogger("dmsac").info("resuming from %s", path)
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
