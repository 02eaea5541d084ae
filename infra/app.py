"""CDK entry point: `cdk synth` / `cdk deploy` run `python -m infra.app` (see cdk.json)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import ConfigError, InfraConfig, config_from_context
from infra.stack import UpscalerStack


def build_app(*, context: Mapping[str, Any] | None = None, outdir: str | None = None,
              nag: bool = True) -> tuple[App, UpscalerStack]:
    """The app with its one stack. Raises ConfigError when the context holds an invalid config."""
    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    config = config_from_context(app.node.get_all_context())
    stack = UpscalerStack(app, config.stack_name, config=config, env=_environment(config))
    if nag:
        # Every synth runs the AWS Solutions rules; unacknowledged findings fail it.
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def _environment(config: InfraConfig) -> Environment | None:
    """Environment-agnostic, except that looking up an existing VPC needs a concrete account/region."""
    if not config.vpc_id:
        return None
    return Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))


def main() -> int:
    try:
        app, _ = build_app()
    except ConfigError as exc:
        print(f"Invalid upscaler configuration: {exc}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
