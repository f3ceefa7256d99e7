"""One-line messages (shortened at a word boundary, without terminal codes) and the evidence errors carry: the tail of
the native output captured while they happened."""

from __future__ import annotations

import os
import pickle
import sys
import warnings

import pytest

from edgepack.errors import (
    ELLIPSIS,
    EdgepackError,
    ToolError,
    UsageError,
    attach_evidence,
    evidence_of,
    one_line,
    shorten,
    strip_terminal_codes,
)
from edgepack.quiet import KEEP_BYTES, captured

LONG = ("checkpoint could not be read because the archive header names a storage record that is missing from the "
        "central directory and the remaining bytes do not form a valid pickle stream either")


# ---- one_line ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [12, 37, 60, 80, 121])
def test_long_messages_are_cut_at_a_word_boundary_with_an_ellipsis(limit):
    line = one_line(ValueError(LONG), limit)
    assert len(line) <= limit and line.endswith(ELLIPSIS), line
    kept = line[: -len(ELLIPSIS)]
    assert LONG.startswith(kept)
    assert LONG[len(kept)] == " ", f"cut inside a word: {line!r}"


def test_short_messages_are_kept_whole_and_only_the_first_line_is_used():
    assert one_line(RuntimeError("\n\n  first line  \nsecond line")) == "first line"
    assert one_line(RuntimeError(LONG), len(LONG)) == LONG
    assert one_line(KeyError()) == "KeyError"
    assert one_line("text\tgiven   directly") == "text given directly"


def test_a_single_token_longer_than_the_limit_is_cut_at_a_separator():
    path = "/very/long/directory/name/that/goes/on/and/on/model.onnx"
    line = one_line(FileNotFoundError(path), 30)
    assert len(line) <= 30 and line.endswith("/" + ELLIPSIS) and path.startswith(line[:-1])


def test_terminal_colour_codes_are_stripped():
    coloured = "\x1b[1m\x1b[31mError:\x1b[0m the exporter failed \x1b]8;;http://x\x07link\x1b]8;;\x07 here"
    assert one_line(RuntimeError(coloured)) == "Error: the exporter failed link here"
    assert strip_terminal_codes("\x1b[2K\x1b[1Gdone") == "done"


def test_shorten_never_returns_more_than_the_limit():
    for limit in range(2, 40):
        assert len(shorten("word " * 20, limit)) <= limit


# ---- evidence ---------------------------------------------------------------------------------------------------
def test_errors_carry_optional_evidence_through_pickling():
    error = ToolError("litert failed", evidence="E tflite: op not supported")
    assert error.evidence == "E tflite: op not supported" and str(error) == "litert failed"
    assert UsageError("bad").evidence == ""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ToolError and copy.evidence == error.evidence and str(copy) == "litert failed"
    assert copy.exit_code == 1 and UsageError("x").exit_code == 2


def test_attach_evidence_keeps_the_innermost_and_tolerates_any_exception():
    error = RuntimeError("from torch")
    attach_evidence(error, "inner")
    attach_evidence(error, "outer")
    assert evidence_of(error) == "inner"
    assert evidence_of(ValueError("none")) == ""
    attach_evidence(EdgepackError("x"), "")  # nothing to attach is not an error


# ---- captured -----------------------------------------------------------------------------------------------------
def _native_print(text: str) -> None:
    """What a C++ library does: write straight to file descriptors 1 and 2, bypassing sys.stdout."""
    os.write(1, text.encode())
    os.write(2, b"E " + text.encode())


def test_captured_keeps_the_tail_of_native_output_and_warnings(capfd):
    with captured() as cap:
        for i in range(30):
            _native_print(f"line {i}\n")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    assert capfd.readouterr() == ("", ""), "native output leaked to the terminal"
    tail = cap.tail(lines=2).splitlines()
    assert tail == ["line 29", "E line 29", "warning: DeprecationWarning: old API"]
    assert "line 0" in cap.text and not cap.truncated
    assert cap.tail(lines=0) == ""


def test_an_exception_escaping_a_captured_block_carries_the_tail(capfd):
    with pytest.raises(ToolError) as info:
        with captured():
            _native_print("\x1b[31mINFO: loading\x1b[0m\n")
            _native_print("progress 10%\rprogress 100%\n")
            raise ToolError("converter failed")
    evidence = info.value.evidence
    assert "E INFO: loading" in evidence and "\x1b" not in evidence
    assert "progress 100%" in evidence and "progress 10%" not in evidence  # a progress bar's last redraw only
    assert capfd.readouterr() == ("", "")


def test_any_exception_gets_evidence_and_the_closest_capture_wins():
    with pytest.raises(RuntimeError) as info:
        with captured():
            _native_print("outer\n")
            with captured():
                _native_print("inner\n")
                raise RuntimeError("upstream")
    assert "inner" in evidence_of(info.value) and "outer" not in evidence_of(info.value)


def test_evidence_given_explicitly_is_not_replaced():
    with pytest.raises(ToolError) as info:
        with captured():
            _native_print("noise\n")
            raise ToolError("failed", evidence="the real cause")
    assert info.value.evidence == "the real cause"


def test_only_the_tail_of_a_flood_is_kept_in_memory():
    with captured() as cap:
        chunk = b"".join(b"chatter %06d\n" % i for i in range(20000))  # ~280 KB
        os.write(2, chunk)
        os.write(2, b"the end\n")
    assert cap.truncated and len(cap.text.encode()) <= KEEP_BYTES
    assert cap.tail(1) == "the end"
    assert cap.text.splitlines()[0].startswith("chatter ")  # whole lines only


def test_descriptors_and_warning_filters_are_restored():
    before = warnings.filters[:]
    with captured():
        print("python print", flush=True)
    with pytest.raises(ValueError):
        with captured():
            raise ValueError("x")
    assert warnings.filters == before
    os.write(1, b"")  # fd 1 is usable again
    sys.stdout.flush()
