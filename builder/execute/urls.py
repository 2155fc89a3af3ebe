"""Which sources are remote: docker's URL rule and BuildKit's git-source rule.

Apart from :mod:`builder.execute.add` (downloads, clones, archives), so that
telling a path from a URL (every build does, for its context) imports none of that.
"""

from __future__ import annotations

import re

_GIT_URL = re.compile(r"^(git@[^:]+:|git://|ssh://|(https?|file)://[^#?]*\.git([#?].*)?$)")


def is_url(source: str) -> bool:
    """``http://`` or ``https://`` (docker's urlutil.IsURL)."""
    return source.startswith(("http://", "https://"))


def is_git_source(source: str) -> bool:
    """BuildKit's notion of a git source: git@, git://, ssh://, or an http(s)/file URL of a .git repo."""
    return bool(_GIT_URL.match(source))
