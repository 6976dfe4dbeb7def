"""Settings precedence and the one-line errors for bad files and values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_node.config import ConfigError, check_bind_policy, load_settings, save_swarm_section
from cortex_node.contracts import NodeTier


def write(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.json", {"swarm": {"name": "from-file", "port": 5000, "group": "g-file",
                                                 "tier": "sudo"}})
    s = load_settings(cfg, env={"CORTEX_SWARM_PORT": "5001", "CORTEX_SWARM_GROUP": "g-env"},
                      flags={"group": "g-flag", "tier": None})
    assert (s.name, s.port, s.group, s.tier) == ("from-file", 5001, "g-flag", NodeTier.SUDO)
    assert s.heartbeat_interval_ms == 30_000 and s.stale_after_ms == 120_000


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "absent.json", env={"CORTEX_HOME": str(tmp_path)})
    assert s.port == 4220 and s.host == "127.0.0.1" and s.data_dir == tmp_path / "swarm"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON at line 1"),
        ("[1, 2]", "top level must be a JSON object"),
        ({"swarm": []}, '"swarm" must be an object'),
        ({"swarm": {"tier": "admin"}}, '"swarm.tier" is \'admin\'; it must be one of root, sudo, unprivileged'),
        ({"swarm": {"port": 70000}}, '"swarm.port" is 70000; it must be an integer port from 0 to 65535'),
        ({"swarm": {"seedNodes": ["ftp://x"]}}, '"swarm.seedNodes"'),
        ({"swarm": {"prot": 1}}, 'unknown key "swarm.prot"; allowed keys:'),
        ({"swarm": {"heartbeatIntervalMs": -5}}, "milliseconds >= 50"),
    ],
)
def test_bad_files_give_one_line_naming_file_and_key(tmp_path: Path, content, expected: str) -> None:
    cfg = write(tmp_path / "c.json", content)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    message = str(err.value)
    assert expected in message and str(cfg) in message and "\n" not in message


def test_bad_flag_and_env_values_name_their_source_and_hide_the_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="option --tier is 'boss'; it must be one of root, sudo, unprivileged"):
        load_settings(tmp_path / "none.json", env={}, flags={"tier": "boss"})
    with pytest.raises(ConfigError, match="environment CORTEX_SWARM_PORT is 'abc'"):
        load_settings(tmp_path / "none.json", env={"CORTEX_SWARM_PORT": "abc"})
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "none.json", env={}, flags={"token": "   "})
    assert "(hidden)" in str(err.value)


def test_stale_after_must_exceed_the_heartbeat_interval(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="staleAfterMs"):
        load_settings(tmp_path / "none.json", env={}, flags={"heartbeatIntervalMs": 5000, "staleAfterMs": 4000})


def test_non_loopback_bind_needs_a_token(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "none.json", env={}, flags={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="without a swarm token"):
        check_bind_policy(s)
    check_bind_policy(load_settings(tmp_path / "none.json", env={"CORTEX_SWARM_TOKEN": "t"}, flags={"host": "0.0.0.0"}))


def test_save_merges_and_never_overwrites_a_malformed_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.json", {"other": {"keep": True}, "swarm": {"group": "g"}})
    save_swarm_section(cfg, {"name": "n1", "port": 4300, "tier": None})
    doc = json.loads(cfg.read_text())
    assert doc == {"other": {"keep": True}, "swarm": {"group": "g", "name": "n1", "port": 4300}}
    bad = write(tmp_path / "bad.json", "{oops")
    with pytest.raises(ConfigError):
        save_swarm_section(bad, {"name": "x"})
    assert bad.read_text() == "{oops"
