"""Node identities, trust roots and the commands that make their files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gridkv import AuthenticationError, ConfigError, Options
from gridkv.cli import main
from gridkv.security.certs import add_node_certs, create_cluster_certs
from gridkv.security.identity import Identity, decode_key, encode_key, new_secret, verify
from gridkv.security.trust import CATrust, KeyListTrust, SecretTrust, parse_key_list, trust_root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- identities --------------------------------------------------------------------------------


def test_a_key_file_is_made_on_first_start_readable_by_its_owner_only_and_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "node.key"
    first = Identity.load("n1", path=str(path))
    assert mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = Identity.load("n1", path=str(path))
    assert again.public_key == first.public_key
    signature = again.sign(b"hello")
    assert verify(first.public_key, signature, b"hello")
    assert not verify(first.public_key, signature, b"hellO")


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    Identity.load("n1", path=str(path))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"auth.key_file.*mode 0644.*chmod 600"):
        Identity.load("n1", path=str(path))


def test_an_inline_key_in_base64_or_pem_gives_the_same_identity(tmp_path: Path) -> None:
    made = Identity.load("n1", path=str(tmp_path / "k"))
    seed = made.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert Identity.load("n1", inline=encode_key(seed)).public_key == made.public_key
    pem = (tmp_path / "k").read_text()
    assert Identity.load("n1", inline=pem).public_key == made.public_key


def test_bad_keys_are_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth.key.*not base64"):
        Identity.load("n1", inline="not a key!")
    with pytest.raises(ConfigError, match=r"auth.key.*16 bytes where 32"):
        Identity.load("n1", inline=encode_key(b"x" * 16))
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigError, match="where an Ed25519 key is needed"):
        Identity.load("n1", inline=other.decode())


def test_without_a_key_file_each_start_has_a_fresh_key() -> None:
    assert Identity.load("n1").public_key != Identity.load("n1").public_key


# -- the cluster secret --------------------------------------------------------------------------


def test_holders_of_the_secret_vouch_for_their_own_keys_and_nobody_else_can() -> None:
    secret = decode_key(new_secret(), "secret")
    ours, theirs = SecretTrust(secret), SecretTrust(secret)
    other = SecretTrust(decode_key(new_secret(), "secret"))
    n1 = Identity.load("n1")
    credential = ours.credential(n1)
    theirs.check("n1", n1.public_key, credential)
    with pytest.raises(AuthenticationError, match="not vouched for by this cluster's secret"):
        other.check("n1", n1.public_key, credential)
    with pytest.raises(AuthenticationError):  # the credential is bound to the id
        theirs.check("n2", n1.public_key, credential)
    with pytest.raises(AuthenticationError):  # and to the key
        theirs.check("n1", Identity.load("n1").public_key, credential)


def test_a_secret_must_be_long_enough_and_its_file_private(tmp_path: Path) -> None:
    short = Options.from_mapping({"auth": {"cluster_secret": encode_key(b"s" * 16)}}).auth
    with pytest.raises(ConfigError, match=r"cluster_secret.*at least 32.*gridkv keys new"):
        trust_root(short)
    path = tmp_path / "secret"
    path.write_text(new_secret() + "\n")
    path.chmod(0o640)
    loose = Options.from_mapping({"auth": {"cluster_secret_file": str(path)}}).auth
    with pytest.raises(ConfigError, match="chmod 600"):
        trust_root(loose)
    path.chmod(0o600)
    assert isinstance(trust_root(loose), SecretTrust)


# -- trusted keys ----------------------------------------------------------------------------------


def test_the_trusted_keys_bind_each_id_to_one_key(tmp_path: Path) -> None:
    n1, n2 = Identity.load("n1"), Identity.load("n2")
    path = tmp_path / "trusted"
    path.write_text(f"# the cluster\nn1 {n1.public_key_text}\n\nn2 {n2.public_key_text}  # b\n")
    trust = trust_root(Options.from_mapping({"auth": {"trusted_keys": str(path)}}).auth)
    assert isinstance(trust, KeyListTrust)
    trust.check("n1", n1.public_key, trust.credential(n1))
    trust.check("n2", n2.public_key, b"")
    with pytest.raises(AuthenticationError, match="other than the ones the trusted keys list"):
        trust.check("n1", n2.public_key, b"")
    with pytest.raises(AuthenticationError, match="'n3' is not in the trusted keys"):
        trust.check("n3", Identity.load("n3").public_key, b"")


def test_the_trusted_keys_are_read_again_when_the_file_changes(tmp_path: Path) -> None:
    n1, n2 = Identity.load("n1"), Identity.load("n2")
    path = tmp_path / "trusted"
    path.write_text(f"n1 {n1.public_key_text}\n")
    now = [0.0]
    trust = KeyListTrust(str(path), clock=lambda: now[0])
    path.write_text(f"n1 {n1.public_key_text}\nn2 {n2.public_key_text}\n")
    os.utime(path, ns=(1, 1))  # a new stamp whatever the file system's resolution
    now[0] = 0.5  # looked at no more than once a second
    trust.check("n1", n1.public_key, b"")
    with pytest.raises(AuthenticationError):
        trust.check("n2", n2.public_key, b"")
    now[0] = 1.0
    trust.check("n2", n2.public_key, b"")
    assert trust.loads == 2
    # A malformed edit keeps the list in force.
    path.write_text("n1 garbage and more\n")
    now[0] = 3.0
    trust.check("n2", n2.public_key, b"")
    assert trust.loads == 2


def test_malformed_trusted_keys_are_refused_naming_the_line() -> None:
    key = Identity.load("n1").public_key_text
    with pytest.raises(ConfigError, match=r"'f', line 2: expected '<node id> <public key>'"):
        parse_key_list(f"n1 {key}\nn2\n", "'f'")
    with pytest.raises(ConfigError, match=r"line 2: node 'n1' has this key already"):
        parse_key_list(f"n1 {key}\nn1 {key}\n", "'f'")
    with pytest.raises(ConfigError, match=r"line 1: not base64"):
        parse_key_list("n1 ???\n", "'f'")


# -- a cluster CA --------------------------------------------------------------------------------


def ca_trust(out: Path, node: str) -> tuple[CATrust, Identity]:
    trust = CATrust((out / "ca.crt").read_bytes(), (out / f"{node}.crt").read_bytes())
    return trust, Identity.load(node, path=str(out / f"{node}.key"))


def test_certificates_from_the_cluster_ca_name_the_node_and_its_key(tmp_path: Path) -> None:
    create_cluster_certs(str(tmp_path), ["n1", "n2", "127.0.0.1"])
    assert mode(tmp_path / "ca.key") == mode(tmp_path / "n1.key") == 0o600
    n1_trust, n1 = ca_trust(tmp_path, "n1")
    n2_trust, n2 = ca_trust(tmp_path, "n2")
    n1_trust.check("n2", n2.public_key, n2_trust.credential(n2))
    with pytest.raises(AuthenticationError, match=r"names \['n2'\]"):
        n1_trust.check("n3", n2.public_key, n2_trust.credential(n2))
    with pytest.raises(AuthenticationError, match="for another key"):
        n1_trust.check("n2", n1.public_key, n2_trust.credential(n2))
    with pytest.raises(AuthenticationError, match="malformed"):
        n1_trust.check("n2", n2.public_key, b"junk")
    other = tmp_path / "other"
    create_cluster_certs(str(other), ["n2"])
    foreign_trust, foreign = ca_trust(other, "n2")
    with pytest.raises(AuthenticationError, match="not issued by the cluster CA"):
        n1_trust.check("n2", foreign.public_key, foreign_trust.credential(foreign))
    # A node configured with a certificate for another key learns it at start.
    with pytest.raises(ConfigError, match=r"auth.cert_file.*for another key"):
        n1_trust.credential(Identity.load("n1"))


def test_certs_create_never_overwrites_a_key(tmp_path: Path) -> None:
    create_cluster_certs(str(tmp_path), ["n1"])
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds ca.key, ca.crt, n1.key, n1.crt"):
        create_cluster_certs(str(tmp_path), ["n1"])
    assert (tmp_path / "ca.key").read_bytes() == before
    with pytest.raises(ConfigError, match="cannot name a certificate file"):
        create_cluster_certs(str(tmp_path / "x"), ["../n1"])


def test_certs_add_issues_more_nodes_from_the_same_ca(tmp_path: Path) -> None:
    create_cluster_certs(str(tmp_path), ["n1"])
    add_node_certs(str(tmp_path), ["n2"])
    n1_trust, _ = ca_trust(tmp_path, "n1")
    n2_trust, n2 = ca_trust(tmp_path, "n2")
    n1_trust.check("n2", n2.public_key, n2_trust.credential(n2))
    assert mode(tmp_path / "n2.key") == 0o600
    with pytest.raises(ConfigError, match=r"already holds n2.key, n2.crt"):
        add_node_certs(str(tmp_path), ["n2"])
    with pytest.raises(ConfigError, match="holds no usable CA"):
        add_node_certs(str(tmp_path / "empty"), ["n3"])
    assert main(["certs", "add", "--out", str(tmp_path), "--nodes", "n3"]) == 0
    assert (tmp_path / "n3.crt").exists()


# -- configuration and commands --------------------------------------------------------------------


def test_one_trust_root_at_a_time_and_a_ca_needs_the_nodes_certificate() -> None:
    with pytest.raises(ConfigError, match=r"'auth.trusted_keys': one trust root at a time"):
        Options.from_mapping({"auth": {"cluster_secret": new_secret(), "trusted_keys": "keys.txt"}})
    with pytest.raises(ConfigError, match=r"'auth.cert_file': a CA trust root"):
        Options.from_mapping({"auth": {"ca_file": "ca.crt"}})
    with pytest.raises(ConfigError, match=r"'auth.key': give this node's key inline or in"):
        Options.from_mapping({"auth": {"key": "k", "key_file": "f"}})
    with pytest.raises(ConfigError, match=r"auth.secret"):
        Options.from_mapping({"auth": {"secret": "s"}})
    assert (
        Options.from_mapping({"auth": {"ca_file": "ca.crt", "cert_file": "n1.crt"}}).auth.trust_root
        == "ca"
    )
    assert Options().auth.trust_root is None


def test_gridkv_keys_new_prints_a_secret_or_a_key_pair(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["keys", "new"]) == 0
    secret = capsys.readouterr().out.strip()
    assert len(base64.b64decode(secret, validate=True)) == 32
    assert main(["keys", "new", "--pair"]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    identity = Identity.load("n1", inline=lines["private"].strip())
    assert identity.public_key_text == lines["public"].strip()
    assert main(["certs", "create", "--out", str(tmp_path), "--nodes", "a, b"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.crt",
        "a.key",
        "b.crt",
        "b.key",
        "ca.crt",
        "ca.key",
    ]
    assert main(["certs", "create", "--out", str(tmp_path), "--nodes", "a"]) == 1
    assert "never overwrites" in capsys.readouterr().err


def test_a_trusted_keys_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trusted"
    path.write_text(f"n1 {Identity.load('n1').public_key_text}\n")
    path.chmod(0o666)
    with pytest.raises(ConfigError, match=r"can be written by others \(mode 0666\).*go-w"):
        KeyListTrust(str(path))
    path.chmod(0o644)
    assert KeyListTrust(str(path)).loads == 1


def test_a_secret_file_another_user_owns_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    path = tmp_path / "secret"
    path.write_text(new_secret())
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to user 65534"):
        trust_root(Options.from_mapping({"auth": {"cluster_secret_file": str(path)}}).auth)
