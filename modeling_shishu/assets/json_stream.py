"""A streaming reader for one large top-level JSON array: items one by one, without reading the whole file."""

import json


def iter_json_array(stream, chunk_chars: int = 1 << 20):
    """Yield the items of a top-level JSON array read from the text `stream`, `chunk_chars` at a time.

    Stops quietly at a truncated last item (the ShareGPT file is cut mid-record).
    """
    decoder = json.JSONDecoder()
    buffer, position, at_eof = "", 0, False
    started = False
    while True:
        # Skip separators; refill when the buffer runs out.
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n,":
                position += 1
            if position < len(buffer) or at_eof:
                break
            buffer, position = stream.read(chunk_chars), 0
            at_eof = not buffer
        if position >= len(buffer):
            return
        if not started:
            if buffer[position] != "[":
                raise ValueError("expected a JSON array")
            started, position = True, position + 1
            continue
        if buffer[position] == "]":
            return
        try:
            item, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError:
            if at_eof:
                return  # truncated last record
            more = stream.read(chunk_chars)
            at_eof = not more
            buffer, position = buffer[position:] + more, 0
            continue
        if end == len(buffer) and not at_eof:
            # A number or literal could continue in the next chunk; records are objects, so this is
            # only a safeguard.
            more = stream.read(chunk_chars)
            at_eof = not more
            buffer, position = buffer[position:] + more, 0
            continue
        yield item
        position = end
