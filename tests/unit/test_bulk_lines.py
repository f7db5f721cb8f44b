"""A bulk result arrives in chunks that need not end where lines do (a static file served in
fixed-size reads): the reader's lines are the file's lines whatever the chunking."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import httpx
from hypothesis import given
from hypothesis import strategies as st

from backfill.runner import _jsonl_runs


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def _lines(chunks: list[bytes]) -> list[bytes]:
    response = httpx.Response(200, stream=_Chunks(chunks))
    return [line async for run in _jsonl_runs(response) for line in run]


async def test_lines_split_across_chunks_are_joined() -> None:
    chunks = [b'{"a":1}\n{"b', b'":2}\n', b"\n", b'{"c":"\xc3', b'\xa9"}']
    assert await _lines(chunks) == [b'{"a":1}', b'{"b":2}', b"", b'{"c":"\xc3\xa9"}']


@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    final_newline=st.booleans(),
)
def test_any_chunking_gives_the_file_s_lines(
    lines: list[bytes], cuts: list[int], final_newline: bool
) -> None:
    text = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    bounds = sorted({0, len(text), *(cut % (len(text) + 1) for cut in cuts)})
    chunks = [text[start:end] for start, end in itertools.pairwise(bounds)]
    expected = text.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()  # the newline ends the last line; it starts none
    assert asyncio.run(_lines(chunks)) == expected
