"""Accounts file parsing and validation."""

import pytest

from floodguard.config import ConfigError
from floodguard.registrar import accounts


def test_password_and_stored_ha1_accounts():
    accs = accounts.loads(
        '[[account]]\nuser = "alice"\npassword = "s3cret"\n'
        '[[account]]\nuser = "bob"\nha1_md5 = "' + "a" * 32 + '"\n'
        '[[account]]\nuser = "carol"\npassword = "x"\nalgorithms = ["sha-256"]\n'
    )
    assert set(accs) == {"alice", "bob", "carol"}
    assert accs["alice"].offered(("MD5", "SHA-256")) == ("MD5", "SHA-256")
    assert accs["bob"].offered(("MD5", "SHA-256")) == ("MD5",)
    assert accs["bob"].stored_ha1("MD5") == "a" * 32
    assert accs["carol"].offered(("MD5", "SHA-256")) == ("SHA-256",)


def test_every_account_error_at_once():
    with pytest.raises(ConfigError) as info:
        accounts.loads(
            '[[account]]\nuser = "a b"\npassword = "x"\n'
            '[[account]]\nuser = "dave"\n'
            '[[account]]\nuser = "erin"\nha1_md5 = "zz"\n'
            '[[account]]\nuser = "fay"\nha1_md5 = "' + "b" * 32 + '"\nalgorithms = ["SHA-256"]\n'
            '[[account]]\nuser = "gus"\npassword = "x"\npasword = "y"\n'
        )
    errs = info.value.errors
    assert errs[0].startswith("account[0].user:")
    assert errs[1] == "account[1]: needs password, ha1_md5 or ha1_sha256"
    assert errs[2] == "account[2].ha1_md5: must be 32 hex digits"
    assert errs[3].startswith("account[3].algorithms: SHA-256 needs a password")
    assert errs[4].startswith("account[4].pasword: unknown key")


def test_duplicate_user_is_an_error():
    with pytest.raises(ConfigError) as info:
        accounts.loads('[[account]]\nuser = "a"\npassword = "x"\n'
                       '[[account]]\nuser = "a"\npassword = "y"\n')
    assert 'is defined more than once' in info.value.errors[0]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError):
        accounts.load(tmp_path / "none.toml")
