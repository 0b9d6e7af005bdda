"""Coverage-guided fuzzing of the wire decoder with atheris (libFuzzer for Python).

Run by tests/faults/test_decoder_fuzz.py as its own process (libFuzzer owns the process it
runs in); by hand:

    .venv/bin/python tests/faults/fuzz_decoder.py -max_total_time=600 CORPUS_DIR

The property, for every input: `decode_message` either returns a message whose canonical
encoding is exactly the input, or raises a `ProtocolError` whose code is one of the decoding
codes of specs/0002-wire.md §6 (1–19). Anything else — another exception, a message that does
not re-encode to its bytes, an input that takes longer than libFuzzer's `-timeout` — is a crash
that libFuzzer reports with the input that caused it.

The seed corpus is every message in specs/vectors/messages.json and every case of
specs/vectors/decode-errors.json (written into the corpus directory by the test).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["protocol"]):
    import protocol.messages  # noqa: F401  (registers every message type)
    from protocol.errors import ProtocolError
    from protocol.records import decode_message

DECODING_CODES = frozenset(range(1, 20)) - {
    int(c) for c in os.environ.get("METERLINE_FUZZ_FORBID", "").split(",") if c}
"""The codes a decoding error may carry. METERLINE_FUZZ_FORBID takes some away: the test uses
it to see that the harness does report a crash when the property breaks."""
VECTORS = Path(__file__).resolve().parents[2] / "specs" / "vectors"


def one_input(data: bytes) -> None:
    try:
        message = decode_message(data)
    except ProtocolError as exc:
        if exc.code not in DECODING_CODES:
            raise AssertionError(f"decoding raised {exc.code.name}, not a decoding code") from exc
        return
    encoded = message.encode()
    if encoded != data:
        raise AssertionError(f"{type(message).__name__} decoded from bytes it does not encode to")


def write_seeds(corpus: Path) -> int:
    """The spec's vectors as the starting corpus; returns how many were written."""
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = [bytes.fromhex(m["encoded"])
             for m in json.loads((VECTORS / "messages.json").read_text())["messages"]]
    seeds += [bytes.fromhex(c["hex"])
              for c in json.loads((VECTORS / "decode-errors.json").read_text())["cases"]]
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    return len(seeds)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
