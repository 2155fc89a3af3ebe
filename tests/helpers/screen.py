"""A small terminal: what a user sees of a program's output on a terminal, frame by frame.

It knows what a live progress view writes (carriage return, new line, cursor up, erase to
the end of the line or the screen, colours, cursor shown/hidden) and records the screen
each time the cursor is shown again: the end of one frame.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+|\x1b")


class Terminal:
    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.row = 0
        self.col = 0
        self.frames: list[list[str]] = []

    def feed(self, text: str) -> Terminal:
        for match in _TOKEN.finditer(text):
            token = match.group(0)
            if token == "\r":
                self.col = 0
            elif token == "\n":
                self.row += 1
                self.col = 0
                while len(self.lines) <= self.row:
                    self.lines.append("")
            elif match.group(2) is not None:
                self._control(match.group(1), match.group(2))
            elif token != "\x1b":
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[:self.col] + token + line[self.col + len(token):]
                self.col += len(token)
        return self

    def _control(self, args: str, final: str) -> None:
        if final == "A":
            self.row = max(0, self.row - int(args or "1"))
        elif final == "K":
            self.lines[self.row] = self.lines[self.row][:self.col]
        elif final == "J":
            self.lines[self.row] = self.lines[self.row][:self.col]
            del self.lines[self.row + 1:]
        elif final == "h" and args == "?25":
            self.frames.append(self.screen())

    def screen(self) -> list[str]:
        """The lines on the screen now, trailing blanks cut."""
        lines = [line.rstrip() for line in self.lines]
        while lines and not lines[-1]:
            lines.pop()
        return lines
