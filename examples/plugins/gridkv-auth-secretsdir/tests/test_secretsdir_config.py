"""A secrets directory that is missing, incomplete, unreadable, malformed or open to others is a
ConfigError naming the file, when the node is built; the plugin loads from its entry point."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

import pytest
from gridkv import AuthenticationError, ConfigError, Options
from gridkv.plugins import Plugins
from gridkv.security.identity import Identity, new_secret
from gridkv.testing.entry_points import check_entry_point
from gridkv_auth_secretsdir import (
    DEFAULT_DIR,
    DIR_ENV,
    NAME,
    DirectoryKeysTrust,
    SecretsDir,
    SecretsDirAuthenticator,
)
from gridkv_auth_secretsdir.testing import write_secret

ME = Identity.load("n1")
PEER = Identity.load("n2")
OPTIONS = Options.from_mapping({"local_node_id": "n1", "auth": {"encrypt": True}})


def build(directory: Path) -> SecretsDirAuthenticator:
    return SecretsDirAuthenticator(OPTIONS, clock=time.time, directory=directory)


def listed(*identities: Identity) -> dict[str, str]:
    return {f"{i.node_id}.pub": i.public_key_text + "\n" for i in identities}


def test_the_plugin_is_declared_loads_and_can_be_disabled() -> None:
    check_entry_point(NAME, "gridkv_auth_secretsdir")
    assert NAME in Plugins().authenticators()


def test_the_entry_points_factory_reads_the_directory_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = write_secret(tmp_path / "s", {"node.key": ME.private_key_text, **listed(ME)})
    monkeypatch.setenv(DIR_ENV, str(secrets))
    auth = Plugins().authenticator(NAME)(OPTIONS, clock=time.time)
    assert isinstance(auth, SecretsDirAuthenticator)
    assert auth.identity.public_key == ME.public_key
    assert auth.sessions is not None and auth.sessions.encrypt  # auth.encrypt is kept
    assert auth.secrets.path == secrets
    monkeypatch.delenv(DIR_ENV)
    with pytest.raises(ConfigError, match=f"secrets directory '{DEFAULT_DIR}'.*set {DIR_ENV}"):
        Plugins().authenticator(NAME)(OPTIONS, clock=time.time)


def test_a_cluster_secret_without_a_node_key_gives_a_fresh_key_each_start(
    tmp_path: Path,
) -> None:
    secrets = write_secret(tmp_path / "s", {"cluster-secret": new_secret()})
    first, second = build(secrets), build(secrets)
    assert first.identity.public_key != second.identity.public_key


def test_the_key_named_after_the_node_comes_before_node_key(tmp_path: Path) -> None:
    items = {"n1.key": ME.private_key_text, "node.key": PEER.private_key_text}
    secrets = write_secret(tmp_path / "s", {**items, "cluster-secret": new_secret()})
    assert build(secrets).identity.public_key == ME.public_key
    pem = tmp_path / "pem"
    pem.mkdir()
    (pem / "cluster-secret").write_text(new_secret())
    (pem / "node.key").write_bytes(Identity.load("x").private_key.private_bytes_raw())
    os.chmod(pem / "cluster-secret", 0o600)
    os.chmod(pem / "node.key", 0o600)
    with pytest.raises(ConfigError, match=r"node\.key'.*not base64"):
        build(pem)


def test_private_items_may_be_read_by_their_group(tmp_path: Path) -> None:
    items = {"node.key": ME.private_key_text, **listed(ME, PEER)}
    secrets = write_secret(tmp_path / "s", items, mode=0o440)  # Kubernetes with an fsGroup
    auth = build(secrets)
    trust = auth.sessions.trust if auth.sessions else None
    assert isinstance(trust, DirectoryKeysTrust)
    assert trust.keys == {"n1": (ME.public_key,), "n2": (PEER.public_key,)}


def _case(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A directory with one thing wrong, and what the error must say (a regex)."""
    good = {"node.key": ME.private_key_text, **listed(ME, PEER)}
    d = tmp_path / "s"
    key = re.escape(str(d / "node.key"))
    if case == "no directory":
        return d, rf"secrets directory '{re.escape(str(d))}': No such file.*set {DIR_ENV}"
    if case == "no trust root":
        write_secret(d, {"node.key": ME.private_key_text})
        return d, rf"secrets directory '{re.escape(str(d))}' holds no trust root"
    if case == "two trust roots":
        write_secret(d, {**good, "cluster-secret": new_secret()})
        return d, r"holds both cluster-secret and public keys \(n1\.pub, n2\.pub\)"
    if case == "no node key":
        write_secret(d, listed(ME, PEER))
        return d, r"has no key for node 'n1': add n1\.key or node\.key"
    if case == "key not listed":
        write_secret(
            d, {"node.key": ME.private_key_text, **listed(PEER), "n1.pub": PEER.public_key_text}
        )
        return d, r"n1\.pub' does not list the public key of this node's key"
    if case == "key readable by others":
        write_secret(d, good, mode=0o444)
        return d, rf"'{key}' can be read by others \(mode 0444\); it holds a secret: chmod o-rwx"
    if case == "secret readable by others":
        write_secret(d, {"cluster-secret": new_secret()}, mode=0o404)
        return d, r"cluster-secret' can be read by others \(mode 0404\)"
    if case == "public key writable by others":
        write_secret(d, good)
        os.chmod(d / "..data" / "n2.pub", 0o466)
        return d, r"n2\.pub' can be written by others \(mode 0466\).*chmod go-w"
    if case == "directory writable by others":
        write_secret(d, good)
        os.chmod(d, 0o777)
        return d, rf"secrets directory '{re.escape(str(d))}' can be written by others"
    if case == "dangling link":
        write_secret(d, good)
        os.unlink(d / "..data" / "node.key")  # the link is there, its file is not
        return d, rf"cannot read '{key}': No such file"
    if case == "link out of the directory":
        write_secret(d, listed(ME, PEER))
        os.symlink(tmp_path / "elsewhere", d / "node.key")
        (tmp_path / "elsewhere").write_text(ME.private_key_text)
        return d, rf"'{key}' leads outside the secrets directory"
    if case == "not a file":
        write_secret(d, listed(ME, PEER))
        (d / "node.key").mkdir()
        return d, rf"'{key}' is not a regular file"
    if case == "malformed key":
        write_secret(d, {**good, "node.key": "-----BEGIN PRIVATE KEY-----\nnope\n"})
        return d, rf"'{key}' is not a readable PEM private key"
    if case == "malformed public key":
        write_secret(d, {**good, "n2.pub": "# n2\n" + PEER.public_key_text + "\nnot a key\n"})
        return d, r"n2\.pub', line 3: not base64"
    if case == "empty public key":
        write_secret(d, {**good, "n2.pub": "# nothing yet\n"})
        return d, r"n2\.pub' holds no public key"
    assert case == "bad cluster secret"
    write_secret(d, {"cluster-secret": "c2hvcnQ="})
    return d, r"cluster-secret': 5 bytes where at least 32 are needed"


CASES = [
    "no directory",
    "no trust root",
    "two trust roots",
    "no node key",
    "key not listed",
    "key readable by others",
    "secret readable by others",
    "public key writable by others",
    "directory writable by others",
    "dangling link",
    "link out of the directory",
    "not a file",
    "malformed key",
    "malformed public key",
    "empty public key",
    "bad cluster secret",
]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_secrets_directory_is_a_config_error_naming_what_is_wrong(
    tmp_path: Path, case: str
) -> None:
    directory, said = _case(tmp_path, case)
    with pytest.raises(ConfigError, match=said):
        build(directory)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_item_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    d = write_secret(tmp_path / "s", {"node.key": ME.private_key_text, **listed(ME)})
    os.chown(d / "..data" / "n1.pub", 4242, -1, follow_symlinks=False)
    with pytest.raises(ConfigError, match=r"n1\.pub' belongs to user 4242"):
        build(d)


def test_a_bad_new_version_of_the_keys_keeps_the_ones_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    items = {"node.key": ME.private_key_text, **listed(ME, PEER)}
    d = write_secret(tmp_path / "s", items)
    trust = DirectoryKeysTrust(SecretsDir(d), lambda: now[0])
    write_secret(d, {**items, "n2.pub": "half written"})
    trust.check("n2", PEER.public_key, b"")  # not looked at again within a second
    now[0] = 1.0
    with caplog.at_level(logging.WARNING, logger="gridkv"):
        trust.check("n2", PEER.public_key, b"")
    assert "trusted keys not reloaded, the previous ones stay" in caplog.text
    assert "n2.pub', line 1: not base64" in caplog.text
    assert trust.loads == 1
    newcomer = Identity.load("n3")
    write_secret(d, {**items, **listed(newcomer)})
    now[0] = 2.0
    trust.check("n3", newcomer.public_key, b"")
    assert trust.loads == 2


def test_an_item_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """Opened without blocking, then checked: a FIFO (no writer ever comes) does not hang the
    node's start, it is a ConfigError naming it."""
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    os.mkfifo(d / "cluster-secret", 0o600)
    outcome: list[object] = []

    def open_it() -> None:
        try:
            SecretsDir(d).trust()
            outcome.append("accepted")
        except ConfigError as exc:
            outcome.append(exc)

    t = threading.Thread(target=open_it, daemon=True)
    t.start()
    t.join(10)  # returns at once unless the open blocks
    if t.is_alive():  # unblock the reader, then fail
        os.close(os.open(d / "cluster-secret", os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("SecretsDir(...).trust() blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError)
    assert re.search(r"cluster-secret' is not a regular file", str(outcome[0]))


def versions(tmp_path: Path, *members: list[Identity]) -> Path:
    """Directories v1, v2, ... of .pub files (members[i] in v<i+1>), and a link "current"
    to v1."""
    for number, identities in enumerate(members, 1):
        version = tmp_path / f"v{number}"
        version.mkdir(mode=0o755)
        for identity in identities:
            (version / f"{identity.node_id}.pub").write_text(identity.public_key_text + "\n")
    current = tmp_path / "current"
    os.symlink("v1", current)
    return current


def repoint(current: Path, version: str) -> None:
    """``ln -sfn <version> current``: the link replaced atomically."""
    swap = current.with_name(current.name + ".tmp")
    os.symlink(version, swap)
    os.replace(swap, current)


def test_a_secrets_directory_whose_link_is_re_pointed_is_followed(tmp_path: Path) -> None:
    newcomer = Identity.load("n3")
    current = versions(tmp_path, [ME, PEER], [ME, newcomer])
    now = [0.0]
    secrets = SecretsDir(current)
    trust = DirectoryKeysTrust(secrets, clock=lambda: now[0])
    before = secrets.stamp()
    repoint(current, "v2")
    assert secrets.stamp() != before
    now[0] += 2
    trust.check("n3", newcomer.public_key, b"")  # v2's member is let in
    assert trust.loads == 2
    with pytest.raises(AuthenticationError, match="'n2' is not in the trusted keys"):
        trust.check("n2", PEER.public_key, b"")  # v1's only member is refused
    assert secrets.read("n1.pub", private=False).decode().strip() == ME.public_key_text


def test_a_re_pointed_directory_is_checked_as_the_first_one_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    newcomer = Identity.load("n3")
    current = versions(tmp_path, [ME, PEER], [ME, PEER, newcomer])
    os.chmod(tmp_path / "v2", 0o777)  # anyone could have put their key in
    now = [0.0]
    trust = DirectoryKeysTrust(SecretsDir(current), clock=lambda: now[0])
    repoint(current, "v2")
    now[0] += 2
    with (
        caplog.at_level(logging.WARNING, logger="gridkv"),
        pytest.raises(AuthenticationError, match="'n3' is not in the trusted keys"),
    ):
        trust.check("n3", newcomer.public_key, b"")
    assert f"secrets directory '{tmp_path / 'v2'}' can be written by others" in caplog.text
    assert trust.loads == 1  # the keys in force stay
    trust.check("n2", PEER.public_key, b"")
