"""The admin token is a secret like the key: refused when others can read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_token
from protocol.crypto import Signer
from tests.node.conftest import make_config


def test_a_readable_token_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path / "n", Signer.from_label("token-test"))
    assert load_token(config)
    config.token_path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_token(config)
    config.token_path.chmod(0o600)
    assert load_token(config)
