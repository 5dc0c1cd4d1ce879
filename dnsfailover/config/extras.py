"""Settings that need an optional extra of `dnsfailover-server`: `cluster:` needs the etcd
client (`[cluster]`: aetcd, grpcio), an SNS notification needs boto3 (`[sns]`).  The core
installs neither; a config that uses one without it is refused where it is validated, naming
the setting and the `pip install` that fixes it, instead of failing at the first import."""

from __future__ import annotations

import importlib.util

from dnsfailover.config.schema import Config
from dnsfailover.config.yamlpos import YamlPath

#: extra -> the top-level modules it installs that the code imports
EXTRAS: dict[str, tuple[str, ...]] = {
    "cluster": ("aetcd", "grpc"),
    "sns": ("boto3", "botocore"),
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing; a module set to None
        return False


def missing_extra(extra: str) -> str | None:
    """The message for a setting that needs `extra` when it is not installed, else None."""
    if all(installed(module) for module in EXTRAS[extra]):
        return None
    return f"needs the '{extra}' extra: pip install 'dnsfailover-server[{extra}]'"


def extra_problems(config: Config) -> list[tuple[YamlPath, str]]:
    """Each setting of `config` whose extra is not installed, as (setting, message)."""
    problems: list[tuple[YamlPath, str]] = []
    if config.cluster is not None and (message := missing_extra("cluster")):
        problems.append((("cluster",), message))
    if config.notifications.sns and (message := missing_extra("sns")):
        problems += [
            (("notifications", "sns", i), message) for i in range(len(config.notifications.sns))
        ]
    return problems
