"""``--secret`` as buildx reads it: id, src/source, env, type=file|env; anything else refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import UsageError
from builder.execute.run import Secret


def test_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "t")
    monkeypatch.delenv("plain", raising=False)
    assert Secret.parse("id=a,src=/s") == Secret("a", Path("/s"), None)
    assert Secret.parse("id=a,source=/s,type=file") == Secret("a", Path("/s"), None)
    assert Secret.parse("id=a,env=TOKEN") == Secret("a", None, "TOKEN")
    assert Secret.parse("id=TOKEN") == Secret("TOKEN", None, "TOKEN")  # a set variable of that name
    assert Secret.parse("id=plain") == Secret("plain", Path("plain"), None)  # else a file of that name
    assert Secret.parse("id=a,type=env,src=TOKEN") == Secret("a", None, "TOKEN")
    assert Secret.parse("id=TOKEN,type=file") == Secret("TOKEN", Path("TOKEN"), None)


@pytest.mark.parametrize("text, message", [
    ("id=a,src=/s,mode=0400", "unexpected key 'mode'"),
    ("id=a,type=keychain", "type must be file or env"),
    ("src=/s", "missing id="),
    ("id=a,/s", "expected id=ID"),
])
def test_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Secret.parse(text)
