"""Symbolic modes (``u+x,go-w``, ``=rw,+X``, ``go=u-w``) as ``COPY --chmod`` takes them.

BuildKit applies them with its mode library, BSD's setmode(3) in Go: chmod(1)'s
rules, where a clause naming no one (``+w``) is limited by the umask,
``u``/``g``/``o`` after the operator copy that class's bits, and one clause may
chain operators (``u+r-w``). ``X`` (x for a directory, or for a file that has an
x bit) counts with every operator, as in Linux's chmod: BSD's took it only with
``+``, so ``u=rwX,go=rX`` made directories 0644, until BuildKit's library
followed Linux (moby/buildkit#5835). The umask is the one dockerd gives
BuildKit, 022.
"""

from __future__ import annotations

from dataclasses import dataclass

UMASK = 0o022  # dockerd sets it at start; BuildKit's --chmod=+w inherits it
_STANDARD = 0o6777  # setuid, setgid and the rwx bits of all three classes
_STICKY = 0o1000
_WHO = {"a": _STANDARD, "u": 0o4700, "g": 0o2070, "o": 0o0007}
_CLEAR, _SET, _U, _G, _O = 1, 2, 4, 8, 16


class ModeSyntaxError(ValueError):
    """The text is not a symbolic mode."""


@dataclass(frozen=True)
class _Step:
    op: str  # '+', '-', 'X' (set or clear x where X counts), or 'u'/'g'/'o' (copy that class's bits)
    bits: int
    flags: int = 0  # for copies: which classes, set and/or clear


@dataclass(frozen=True)
class SymbolicMode:
    """A parsed symbolic mode: :meth:`apply` it to a file's mode."""

    steps: tuple[_Step, ...]

    @classmethod
    def parse(cls, text: str, umask: int = UMASK) -> SymbolicMode:
        """setmode(3)'s grammar: ``[ugoa]*([-+=]([rwxXst]*|[ugo]))+`` clauses joined by ','."""
        mask = ~umask & 0o7777
        steps: list[_Step] = []

        def add(op: str, who: int, arg: int | str) -> None:
            if op == "=":
                steps.append(_Step("-", who or _STANDARD))
                op = "+"
            if op in "+-":
                assert isinstance(arg, int)
                steps.append(_Step(op, (who or mask) & arg))
                return
            flags = {"+": _SET, "-": _CLEAR, "=": _SET | _CLEAR}[str(arg)]
            if who:
                flags |= (_U if who & 0o400 else 0) | (_G if who & 0o040 else 0) | (_O if who & 0o004 else 0)
                steps.append(_Step(op, 0o7777, flags))
            else:
                steps.append(_Step(op, mask, flags | _U | _G | _O))

        def add_x(op: str, who: int) -> None:
            """``X`` after ``+`` or ``=`` sets the x bits it names, after ``-`` clears them."""
            steps.append(_Step("X", (who or mask) & 0o111, _CLEAR if op == "-" else _SET))

        i, n = 0, len(text)
        if not text:
            raise ModeSyntaxError(text)
        while True:
            who = 0
            while i < n and text[i] in _WHO:
                who |= _WHO[text[i]]
                i += 1
            equal_done = False
            while True:  # operators of one clause
                if i >= n or text[i] not in "+-=":
                    raise ModeSyntaxError(text)
                op = text[i]
                i += 1
                if op == "=":
                    equal_done = False
                who &= ~_STICKY
                perm = perm_x = 0
                while True:
                    c = text[i] if i < n else ""
                    if c == "r":
                        perm |= 0o444
                    elif c == "w":
                        perm |= 0o222
                    elif c == "x":
                        perm |= 0o111
                    elif c == "X":
                        perm_x = 0o111
                    elif c == "s":
                        if who == 0 or who & ~0o007:  # "o" alone has no set-id bits
                            perm |= 0o6000
                    elif c == "t":
                        if who == 0 or who & ~0o007:  # nor a sticky bit
                            who |= _STICKY
                            perm |= _STICKY
                    elif c and c in "ugo":
                        if perm:
                            add(op, who, perm)
                            perm = 0
                        if op == "=":
                            equal_done = True
                        if perm_x:
                            add_x(op, who)
                            perm_x = 0
                        add(c, who, op)
                    else:
                        if perm or (op == "=" and not equal_done):
                            equal_done = equal_done or op == "="
                            add(op, who, perm)
                        if perm_x:
                            add_x(op, who)
                        break
                    i += 1
                if i >= n or text[i] == ",":
                    break
            if i >= n:
                return cls(tuple(steps))
            i += 1  # the ','
            if i >= n:
                raise ModeSyntaxError(text)  # a trailing ','

    def apply(self, mode: int, is_dir: bool) -> int:
        """The mode after the clauses, from ``mode``'s permission bits (``X``: from the original)."""
        original = mode & 0o7777
        new = original
        for step in self.steps:
            if step.op == "+":
                new |= step.bits
            elif step.op == "-":
                new &= ~step.bits
            elif step.op == "X":
                if original & 0o111 or is_dir:
                    new = new & ~step.bits if step.flags & _CLEAR else new | step.bits
            else:
                value = {"u": (new & 0o700) >> 6, "g": (new & 0o070) >> 3, "o": new & 0o007}[step.op]
                shifts = [s for flag, s in ((_U, 6), (_G, 3), (_O, 0)) if step.flags & flag]
                if step.flags & _CLEAR:
                    cleared = 0o007 if step.flags & _SET else value
                    for shift in shifts:
                        new &= ~((cleared << shift) & step.bits)
                if step.flags & _SET:
                    for shift in shifts:
                        new |= (value << shift) & step.bits
        return new & 0o7777
