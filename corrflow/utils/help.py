"""``--help`` of the Hydra tools: the config groups a tool uses, with their options.

Hydra's ``$APP_CONFIG_GROUPS`` lists every group under ``conf/``, those of the other tools too
(``tools/propagate.py --help`` would offer ``trainer=`` and ``experiment=``). The help templates
in ``conf/hydra/*.yaml`` name their tool's own groups instead, through the resolver
``${corrflow_config_groups:task,method,...}``, which lists each group's options as Hydra finds
them (``group: option, option``). A group placed at another package is written
``group@package`` (``protocol@monitor.protocol``) and listed under that override's name.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from corrflow.utils.conf import CONF_DIR

__all__ = ["RESOLVER", "format_config_groups", "group_options", "register_help_resolver"]

RESOLVER = "corrflow_config_groups"


def group_options(group: str) -> list[str]:
    """The options of config group ``group`` (``model/net/encoder`` for a nested one): from Hydra's
    config search path inside a Hydra run (``--help`` included), else from the repository's conf/."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    if GlobalHydra.instance().is_initialized():
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group, ObjectType.CONFIG))
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def format_config_groups(*groups: str) -> str:
    """One line a group, ``  name: option, option, ...`` (indented by two spaces), in the order
    given. ``group@package`` lists ``group``'s options under the override's name, ``group@package``."""
    lines = []
    for entry in groups:
        group = str(entry).split("@", 1)[0]
        options = group_options(group)
        if not options:
            raise ValueError(f"help: config group {group!r} has no options under {CONF_DIR} (a renamed group?)")
        lines.append(f"  {entry}: {', '.join(options)}")
    return "\n".join(lines)


def register_help_resolver() -> None:
    """Register ``${corrflow_config_groups:...}`` (once), for the help templates in conf/hydra/."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, format_config_groups)
