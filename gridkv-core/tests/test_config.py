from __future__ import annotations

import json
import os
import re
import socket
from datetime import timedelta
from pathlib import Path

import gridkv
import pytest
from gridkv import ConfigError, Options, load_config
from gridkv.base.durations import format_duration, parse_duration

GO_STYLE_JSON = """
{
  "local_node_id": "node-1",
  "local_address": "10.0.0.1:7946",
  "seed_addrs": ["10.0.0.2:7946", "10.0.0.3:7946"],
  "replica_count": 3,
  "virtual_nodes": 150,
  "ttl": "1h",
  "hot_read_cache_ttl": "500ms",
  "hot_cache_size": 5000,
  "read_repair_rate_limit_per_sec": 200,
  "failure_timeout": "2s",
  "suspect_timeout": "5s",
  "gossip_interval": "1s",
  "replication_timeout": "3s",
  "read_timeout": "1s",
  "startup_grace_period": "10s",
  "disable_auth": true,
  "batch_threshold": 64,
  "batch_window": "10ms",
  "network": {"type": "memory", "bind_addr": "0.0.0.0:7946", "max_idle": 8,
              "max_conns": 32, "timeout": "3s", "read_timeout": "2s", "write_timeout": "2s"},
  "storage": {"max_memory_mb": 512, "shard_count": 64},
  "log": {"level": "debug", "format": "json", "time_format": "%H:%M:%S",
          "no_caller": true, "no_time": false}
}
"""


def test_go_style_json_config_loads_unchanged() -> None:
    opts = load_config(GO_STYLE_JSON)
    assert opts.local_node_id == "node-1"
    assert opts.seed_addrs == ["10.0.0.2:7946", "10.0.0.3:7946"]
    assert opts.ttl == 3600.0
    assert opts.hot_read_cache_ttl == 0.5
    assert opts.batch_window == 0.01
    assert opts.network.bind_addr == "0.0.0.0:7946"
    assert opts.network.max_conns == 32
    assert opts.storage.shard_count == 64
    assert opts.log.format == "json"
    assert opts.log.no_caller is True
    assert opts.bind_address == "0.0.0.0:7946"


def test_same_config_in_yaml_toml_and_json_files_is_equal(tmp_path: Path) -> None:
    data = json.loads(GO_STYLE_JSON)
    (tmp_path / "n.json").write_text(json.dumps(data))
    (tmp_path / "n.yaml").write_text(
        "local_node_id: node-1\nlocal_address: 10.0.0.1:7946\nseed_addrs: [10.0.0.2:7946, "
        "10.0.0.3:7946]\nttl: 1h\ndisable_auth: true\nnetwork:\n  type: memory\n"
    )
    (tmp_path / "n.toml").write_text(
        'local_node_id = "node-1"\nlocal_address = "10.0.0.1:7946"\n'
        'seed_addrs = ["10.0.0.2:7946", "10.0.0.3:7946"]\nttl = "1h"\ndisable_auth = true\n'
        '[network]\ntype = "memory"\n'
    )
    from_json = load_config(tmp_path / "n.json")
    from_yaml = load_config(str(tmp_path / "n.yaml"))
    from_toml = load_config(tmp_path / "n.toml")
    for opts in (from_json, from_yaml, from_toml):
        assert opts.local_node_id == "node-1"
        assert opts.ttl == 3600.0
        assert opts.seed_addrs == ["10.0.0.2:7946", "10.0.0.3:7946"]
        assert opts.network.type == "memory"


def test_yaml_and_toml_text_are_recognised_without_a_suffix() -> None:
    assert load_config("local_node_id: a\nttl: 90s\n").ttl == 90.0
    assert load_config('local_node_id = "a"\nttl = 5\n').ttl == 5.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", 0.25),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2", 2.0),
        ("100us", 0.0001),
        ("10ns", 1e-8),
        (3, 3.0),
        (0.5, 0.5),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_durations_parse(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "5x", "ms", "-1s", "1h 30m", "5m3", True, None, [1], -1])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked elsewhere
        parse_duration(bad)


def test_format_duration_round_trips() -> None:
    for seconds in (0.0, 0.25, 1.5, 90.0):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_unknown_top_level_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'replica_cout'.*'replica_count'"):
        load_config('{"replica_cout": 3}')


def test_unknown_nested_key_is_named_with_its_section() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'network.max_con'"):
        load_config('{"network": {"max_con": 3}}')


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ('{"replica_count": 0}', "replica_count", "0"),
        ('{"replica_count": "three"}', "replica_count", "'three'"),
        ('{"gossip_interval": "soon"}', "gossip_interval", "'soon'"),
        ('{"network": {"timeout": "-5s"}}', "network.timeout", "'-5s'"),
        ('{"storage": {"eviction": "random"}}', "storage.eviction", "'random'"),
        ('{"log": {"level": "loud"}}', "log.level", "'loud'"),
        ('{"disable_auth": "yes"}', "disable_auth", "'yes'"),
        ('{"seed_addrs": [1, 2]}', "seed_addrs", "[1, 2]"),
        ('{"consistency": "most"}', "consistency", "'most'"),
        ('{"network": 5}', "network", "5"),
        ('{"local_node_id": "%s"}' % ("n" * 256), "local_node_id", "at most 255"),
    ],
)
def test_bad_values_name_the_key_and_the_value(text: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert repr(key) in str(info.value)
    assert value in str(info.value)


def test_keyword_options_are_checked_like_files() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'replicas'"):
        gridkv.AsyncGridKV(replicas=3)
    with pytest.raises(ConfigError, match="'batch_threshold'"):
        Options(batch_threshold=0)


def test_config_errors_are_value_errors_and_gridkv_errors() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        load_config('{"replica_count": -1}')
    with pytest.raises(gridkv.GridKVError):
        load_config('{"replica_count": -1}')


def test_unparseable_and_unreadable_configs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config("{not json")
    (tmp_path / "bad.toml").write_text("a = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config("- a\n- b\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="empty"):
        load_config("   ")


def test_max_value_must_fit_in_a_frame() -> None:
    with pytest.raises(ConfigError, match="max_value_bytes"):
        Options.from_mapping(
            {"max_value_bytes": 32 << 20, "network": {"max_frame_bytes": 16 << 20}}
        )


def test_replace_changes_nested_sections_and_keeps_the_rest() -> None:
    opts = Options.from_mapping({"local_node_id": "a", "storage": {"max_memory_mb": 64}})
    changed = opts.replace(storage={"eviction": "lru"}, replica_count=2)
    assert changed.storage.max_memory_mb == 64
    assert changed.storage.eviction == "lru"
    assert changed.replica_count == 2
    assert opts.replica_count == 3


def test_empty_node_id_gets_a_host_and_pid_default() -> None:
    assert Options().local_node_id == f"{socket.gethostname()}-{os.getpid()}"


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"seed_addrs": ["10.0.0.2"]}, "seed_addrs[0]"),
        ({"seed_addrs": ["10.0.0.2:7946", "10.0.0.3:0"]}, "seed_addrs[1]"),
        ({"seed_addrs": [":7946"]}, "seed_addrs[0]"),
        ({"local_address": "node-1"}, "local_address"),
        ({"local_address": "node-1:99999"}, "local_address"),
        ({"network": {"bind_addr": "0.0.0.0"}}, "network.bind_addr"),
    ],
)
def test_an_address_without_a_port_is_refused_when_the_options_are_built(
    mapping: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(key))):
        Options.from_mapping(mapping)


def test_ipv6_and_wildcard_addresses_are_accepted() -> None:
    opts = Options.from_mapping(
        {
            "local_address": "[::1]:7946",
            "seed_addrs": ["[::1]:7947"],
            "network": {"bind_addr": ":0"},
        }
    )
    assert opts.bind_address == ":0"
    assert opts.local_address == "[::1]:7946"
    assert opts.seed_addrs == ["[::1]:7947"]


@pytest.mark.parametrize("key", ["max_inbound_buffer_bytes", "max_output_buffer_bytes"])
def test_a_buffer_limit_smaller_than_a_frame_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=f"network.{key}"):
        Options.from_mapping({"network": {key: 1 << 20, "max_frame_bytes": 2 << 20}})


# -- load_config of a path ------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["node.yaml", "node.yml", "NODE.TOML", "conf/node.json", "etc/gridkv/node", "./node"],
)
def test_a_path_that_does_not_exist_is_reported_missing_with_its_absolute_path(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(source)
    message = str(info.value)
    assert "does not exist" in message
    assert repr(str(tmp_path / source)) in message


def test_a_missing_path_object_is_reported_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{str(tmp_path / 'n.yaml')!r} does not")):
        load_config(tmp_path / "n.yaml")


def test_a_windows_path_with_a_config_suffix_is_a_path_despite_its_colon() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("C:\\gridkv\\node.yml")


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf.yaml").mkdir()
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(tmp_path / "conf.yaml")
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(str(tmp_path))


@pytest.mark.parametrize(
    ("text", "node_id"),
    [
        ("local_node_id: a/b", "a/b"),
        ('local_node_id = "a/b"', "a/b"),
        ('{"local_node_id": "a/b"}', "a/b"),
        ("log: {time_format: '%Y/%m/%d'}\nlocal_node_id: a/b", "a/b"),
        ("local_node_id: a/b.yaml\n", "a/b.yaml"),
    ],
)
def test_configuration_text_that_mentions_a_path_still_loads_as_text(
    text: str, node_id: str
) -> None:
    assert load_config(text).local_node_id == node_id


def test_inline_yaml_toml_and_json_text_still_load() -> None:
    assert load_config("local_node_id: a").local_node_id == "a"
    assert load_config('local_node_id = "a"').local_node_id == "a"
    assert load_config('{"local_node_id": "a"}').local_node_id == "a"
    assert load_config("log: {time_format: '%Y/%m/%d'}\n").log.time_format == "%Y/%m/%d"


def test_one_line_text_ending_in_a_config_suffix_is_a_path() -> None:
    # The rule is simple on purpose; a line break makes the same string text.
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("local_node_id: n1.yaml")
    assert load_config("local_node_id: n1.yaml\n").local_node_id == "n1.yaml"


def test_an_existing_file_without_a_config_suffix_is_read_by_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "node.conf").write_text("local_node_id: from-file\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("node.conf").local_node_id == "from-file"
    assert load_config(tmp_path / "node.conf").local_node_id == "from-file"


def test_a_one_line_scalar_that_is_not_a_path_says_how_it_was_read() -> None:
    with pytest.raises(ConfigError, match="read as a path only when it looks like one"):
        load_config("node")
