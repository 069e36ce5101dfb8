"""Tokens -> text while streaming: broken characters are held back, stop strings cut the reply (even split
across tokens), and what is released adds up to the whole reply."""

from pipelines.serve.stream import TextStream


def byte_decoder(ids):
    """Each id is one byte of UTF-8 (like sentencepiece's byte fallback); broken characters decode to U+FFFD."""
    return bytes(ids).decode("utf-8", errors="replace")


def stream_all(stream: TextStream, ids, step=1):
    out = [stream.push(ids[i:i + step]) for i in range(0, len(ids), step)]
    return out + [stream.finish()]


def test_a_multibyte_character_split_across_tokens_is_never_sent_broken():
    text = "naïve café — 東京"
    pieces = stream_all(TextStream(byte_decoder), list(text.encode()))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_strings_cut_the_reply_even_across_tokens():
    pieces = stream_all(TextStream(byte_decoder, stop=["\nUser:"]), list(b"Paris is the capital.\nUser: next"))
    assert "".join(pieces) == "Paris is the capital."
    assert all("\n" not in p for p in pieces)  # the start of the stop string was held back, then dropped
    held = stream_all(TextStream(byte_decoder, stop=["END"]), list(b"fine EN"))
    assert "".join(held) == "fine EN"  # a prefix that never completed is released at the end


def test_control_tokens_are_not_text():
    stream = TextStream(byte_decoder, skip_ids={0})
    assert stream.push([72, 105, 0]) + stream.finish() == "Hi"


def test_usage_counts_the_tokens_of_the_returned_text_however_the_tokens_arrive():
    ids = list(b"Paris is the capital.\nUser: next")
    for step in (1, 5, len(ids)):  # the replica's batches: after the stop string, more or fewer tokens came
        stream = TextStream(byte_decoder, stop=["\nUser:"])
        assert "".join(stream_all(stream, ids, step)) == "Paris is the capital."
        assert stream.completion_tokens == len(b"Paris is the capital.")
    whole = TextStream(byte_decoder, skip_ids={0})
    stream_all(whole, [72, 105, 0])
    assert whole.completion_tokens == 3  # no stop string: every token, the control token that ended it included
    cut = TextStream(byte_decoder, stop=["\u00e9"])
    assert "".join(stream_all(cut, list("caf\u00e9 noir".encode()), 11)) == "caf"
    assert cut.completion_tokens == 3
