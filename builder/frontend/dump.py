"""BuildKit's AST dump (``parser.Node.Dump``): the format of its parser test corpus.

One line per instruction, ``(keyword ["--flag" ...] "arg" ...)``, values quoted
the way Go's ``strconv.Quote`` quotes them. Used by the conformance tests and by
anyone who wants to diff pybuild's parse against BuildKit's.
"""

from __future__ import annotations

import re
import unicodedata

from builder.frontend.ast import Node, ParsedDockerfile

# Go's unicode.IsSpace, for the final strings.TrimSpace of a node dump.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SHORT_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
    '"': '\\"', "\\": "\\\\",
}
# Text that strconv.Quote leaves alone: printable ASCII other than '"' and '\'.
_PLAIN = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*')


def go_quote(text: str) -> str:
    """Quote like Go's strconv.Quote; json.dumps and repr differ (\\x00, non-ASCII, \\u escapes).

    Lone surrogates U+DC80..U+DCFF stand for undecodable bytes (Python's
    ``surrogateescape``) and print as ``\\xHH``, as Go prints invalid UTF-8.
    """
    if _PLAIN.fullmatch(text):
        return f'"{text}"'
    out = ['"']
    for ch in text:
        short = _SHORT_ESCAPES.get(ch)
        if short is not None:
            out.append(short)
            continue
        cp = ord(ch)
        if 0x20 <= cp < 0x7F:
            out.append(ch)
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif 0xD800 <= cp <= 0xDFFF:
            # Bytes that were not valid UTF-8: Go prints each byte as \xHH.
            if 0xDC80 <= cp <= 0xDCFF:
                out.append(f"\\x{cp - 0xDC00:02x}")
            else:
                out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        elif unicodedata.category(ch)[0] in "LMNPS":
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def go_quote_rune(cp: int) -> str:
    """Go's ``%q`` of an integer (strconv.QuoteRune): ``'\\n'``, ``'A'``, ``'\\x07'``; invalid code
    points print as U+FFFD."""
    if not 0 <= cp <= 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        cp = 0xFFFD
    ch = chr(cp)
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return f"'{go_quote(ch)[1:-1]}'"


def dump_node(node: Node) -> str:
    """One node without the surrounding parentheses: ``run ["--mount=..."] "echo hi"``."""
    chain = [node]
    while chain[-1].inner is not None:
        chain.append(chain[-1].inner)
    text = ""
    for current in reversed(chain):  # innermost first; no recursion for deep ONBUILD chains
        parts = [current.keyword]
        if current.flags:
            parts.append("[" + " ".join(go_quote(f) for f in current.flags) + "]")
        if current.inner is not None:
            parts.append(f"({text})")
        parts.extend(go_quote(a) for a in current.args)
        text = " ".join(parts).strip(_GO_SPACE)
    return text


def dump_buildkit(parsed: ParsedDockerfile) -> str:
    """The whole file as BuildKit's parser tests print it, ending in a newline."""
    return "".join(f"({dump_node(node)})\n" for node in parsed.nodes)
