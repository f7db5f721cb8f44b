"""A minimal terminal screen for tests: replays what a program wrote to a terminal (text, CR,
LF, and the CSI cursor and erase sequences rich uses) and returns the lines a person would see."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|(.)", re.S)


def screen(output: str) -> list[str]:
    """The final screen of an unlimited-height terminal after `output`, trailing spaces cut."""
    lines: list[list[str]] = [[]]
    row = col = 0

    def line() -> list[str]:
        while len(lines) <= row:
            lines.append([])
        return lines[row]

    for match in _TOKEN.finditer(output):
        params, final, char = match.group(1), match.group(2), match.group(3)
        if char is not None:
            if char == "\r":
                col = 0
            elif char == "\n":
                row, col = row + 1, 0
                line()
            elif char == "\b":
                col = max(0, col - 1)
            elif char >= " ":
                current = line()
                current.extend(" " * (col - len(current)))
                if col < len(current):
                    current[col] = char
                else:
                    current.append(char)
                col += 1
            continue
        if final is None:
            continue  # OSC (title, hyperlink): nothing on screen
        numbers = [int(part) for part in params.replace("?", "").split(";") if part]
        count = numbers[0] if numbers else 1
        if final == "A":
            row = max(0, row - count)
        elif final == "B":
            row += count
        elif final == "C":
            col += count
        elif final == "D":
            col = max(0, col - count)
        elif final == "G":
            col = max(0, count - 1)
        elif final == "K":
            mode = numbers[0] if numbers else 0
            current = line()
            if mode == 2:
                current.clear()
            elif mode == 0:
                del current[col:]
            else:
                current[: col + 1] = [" "] * min(len(current), col + 1)
        elif final == "J":
            mode = numbers[0] if numbers else 0
            if mode == 0:
                del line()[col:]
                del lines[row + 1 :]
        # m (colours), h/l (cursor shown or hidden) and the rest change nothing on screen
    return ["".join(chars).rstrip() for chars in lines]
