"""Which sources are remote: docker's URL rule and BuildKit's git-source rule.

Apart from :mod:`builder.execute.add` (downloads, clones, archives), so that
telling a path from a URL (every build does, for its context) imports none of that.
"""

from __future__ import annotations

import re

_GIT_URL = re.compile(r"^(git@[^:]+:|git://|ssh://|(https?|file)://[^#?]*\.git([#?].*)?$)")
# The user-info of a URL (``https://user:token@host``) wherever one appears in a text.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*)(?::(?P<password>[^/@\s]*))?@")
MASK = "xxxxx"


def is_url(source: str) -> bool:
    """``http://`` or ``https://`` (docker's urlutil.IsURL)."""
    return source.startswith(("http://", "https://"))


def is_git_source(source: str) -> bool:
    """BuildKit's notion of a git source: git@, git://, ssh://, or an http(s)/file URL of a .git repo."""
    return bool(_GIT_URL.match(source))


def redact_credentials(text: str) -> str:
    """Mask the user and password of every URL in ``text``, as BuildKit's RedactCredentials does
    (``https://user:token@host`` -> ``https://xxxxx:xxxxx@host``): a git or download URL given
    with a token must not reach a message, a log or a kept ``.git/config``."""

    def mask(m: re.Match[str]) -> str:
        user = MASK if m["user"] else ""
        password = f":{MASK}" if m["password"] is not None else ""
        return f"{m['scheme']}{user}{password}@"

    return _USERINFO.sub(mask, text)
