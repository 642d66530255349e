"""corrflow.utils.conf: the menus equal the config folders, and composing from code neither needs
nor disturbs a running Hydra app."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException

from corrflow.utils.conf import CONF_DIR, FEATURES, PROTOCOLS, compose_config, compose_propagate


@pytest.mark.parametrize(("group", "choices"), [("features", FEATURES), ("protocol", PROTOCOLS)])
def test_choices_are_the_config_folders_options(group: str, choices: tuple[str, ...]) -> None:
    on_disk = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert on_disk, f"no options under {CONF_DIR / group}"
    assert sorted(choices) == on_disk
    assert len(set(choices)) == len(choices)


def test_compose_propagate_applies_overrides_and_each_protocol_composes() -> None:
    for protocol in PROTOCOLS:
        cfg = compose_propagate([f"protocol={protocol}", "features=lab"])
        assert cfg.protocol.name == protocol  # each conf/protocol/<name>.yaml names itself
        assert cfg.protocol == compose_config("propagate", [f"protocol={protocol}"]).protocol
    crw, fast = compose_propagate(["protocol=crw"]), compose_propagate(["protocol=crw_fast"])
    assert crw.protocol != fast.protocol  # the override reached the config
    assert fast.protocol.propagator.first_stride == 2 and fast.protocol.propagator.n_recent == 10  # conf/protocol/crw_fast.yaml


def test_compose_inside_a_running_hydra_app_puts_its_state_back(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text("who: the app\n")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            before = GlobalHydra.instance().hydra
            assert compose_propagate(["protocol=crw"]).protocol is not None
            assert GlobalHydra.instance().hydra is before
            assert compose(config_name="app").who == "the app"  # the app's own search path still works
    finally:
        GlobalHydra.instance().clear()


def test_compose_from_threads_gives_each_its_own_overrides() -> None:
    got: dict[str, object] = {}

    def worker(protocol: str) -> None:
        for _ in range(3):
            got[protocol] = compose_propagate([f"protocol={protocol}"]).protocol

    threads = [threading.Thread(target=worker, args=(p,)) for p in PROTOCOLS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in PROTOCOLS:
        assert got[p].name == p
        assert got[p] == compose_propagate([f"protocol={p}"]).protocol


def test_a_missing_option_is_hydras_error() -> None:
    with pytest.raises(MissingConfigException):
        compose_propagate(["protocol=no_such_protocol"])
