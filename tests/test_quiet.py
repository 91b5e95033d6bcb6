"""Third-party warnings and log records while reading a user's file stay quiet.

Fixtures make the real libraries complain: a DICOM whose meta says explicit VR but whose
body is implicit (pydicom warns *and* logs "Expected explicit VR, but found implicit VR"),
a header value that is not a valid IS, and a PNG over Pillow's decompression-bomb limit.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings

import numpy as np
import pytest

from alexkit import quiet
from alexkit.errors import DataError, UnreadableImage

pydicom = pytest.importorskip("pydicom")


@pytest.fixture(autouse=True)
def _fresh():
    from alexkit.media import clear_cache

    clear_cache()
    quiet.tally(reset=True)
    yield
    clear_cache()
    quiet.tally(reset=True)


@pytest.fixture
def stderr_logging():
    """What the CLI does (setup_logging): a root handler printing WARNING+ to stderr."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    yield
    root.removeHandler(handler)
    root.setLevel(old_level)


STORED = np.array([[0, 100, 500], [1000, 2000, 4095]], dtype=np.uint16)


def implicit_body_dicom(path, pixel_bytes=None, number_of_frames=None):
    """Meta says Explicit VR Little Endian; the data set is written implicit VR."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.PatientID = "Q-123"
    ds.Rows, ds.Columns = STORED.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    if number_of_frames is not None:
        ds.NumberOfFrames = 1
    ds.PixelData = STORED.tobytes() if pixel_bytes is None else pixel_bytes
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, ds)
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, meta)
    data = b"\0" * 128 + b"DICM" + head.getvalue() + body.getvalue()
    if number_of_frames is not None:  # an IS value pydicom cannot parse, same length
        data = data.replace(b"1 ", number_of_frames.encode()[:2], 1)
    path.write_bytes(data)
    return str(path)


def test_pydicom_warnings_on_a_readable_file_are_counted_not_printed(
    tmp_path, capfd, recwarn, caplog, stderr_logging
):
    from alexkit.media import decode_member, expand

    path = implicit_body_dicom(tmp_path / "odd.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # so a leak could not hide behind the once-registry
        [(item, group)] = expand(path)
        image = decode_member(item)
    assert image.shape == (2, 3, 3) and group.startswith("patient:")
    err = capfd.readouterr().err
    assert "pydicom" not in err and "implicit VR" not in err, err
    assert not [w for w in recwarn if "VR" in str(w.message)]
    files, extra = quiet.tally()
    assert set(files) == {path} and files[path] >= 1 and extra == 0
    summary = quiet.tally_summary(reset=False)
    assert summary.startswith("1 file(s) were read despite library warnings (")
    # --verbose (INFO) shows the detail, on alexkit's logger.
    caplog.clear()
    caplog.set_level(logging.INFO, logger="alexkit.quiet")
    from alexkit.media import clear_cache

    clear_cache()
    decode_member(item)
    assert "Expected explicit VR, but found implicit VR" in caplog.text
    assert "Q-123" not in caplog.text


def test_a_failed_read_carries_the_library_message_in_its_one_line_reason(
    tmp_path, capfd, stderr_logging
):
    from alexkit.media import decode_member

    path = implicit_body_dicom(tmp_path / "short.dcm", pixel_bytes=b"\x00\x01")
    with pytest.raises(DataError) as info:
        decode_member(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot decode DICOM pixels")
    assert "[pydicom: Expected explicit VR, but found implicit VR" in message
    assert "\n" not in message
    assert "implicit VR" not in capfd.readouterr().err
    assert quiet.tally()[0] == {}  # a failure is reported by its reason, not counted


def test_invalid_header_value_warning_is_captured_with_quoted_values_hidden(
    tmp_path, capfd, recwarn, stderr_logging
):
    from alexkit.media import expand

    path = implicit_body_dicom(tmp_path / "is.dcm", number_of_frames="x7")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with quiet.quiet_read(path, redact_quotes=True) as captured:
            ds = pydicom.dcmread(path, specific_tags=["NumberOfFrames"])
            value = ds.get("NumberOfFrames")
    assert str(value) == "x7"
    assert any("Invalid value for VR IS: '…'" in m for m in captured.messages), captured.messages
    assert not any("x7" in m for m in captured.messages)
    assert len(expand(path)) == 1  # the reader reads it as one frame
    assert "Invalid value" not in capfd.readouterr().err
    assert not [w for w in recwarn if "Invalid value" in str(w.message)]


def test_pillow_warning_is_captured(tmp_path, monkeypatch, recwarn, capfd):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    png = tmp_path / "big.png"
    png.write_bytes(buf.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: a bomb warning, not error
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with quiet.quiet_read(str(png)) as captured:
            with Image.open(png) as img:
                img.load()
    assert [m.split(":")[0] for m in captured.messages] == ["PIL"]
    assert "DecompressionBombWarning" in captured.messages[0]
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]
    assert quiet.tally()[0] == {str(png): 1}
    assert "DecompressionBomb" not in capfd.readouterr().err


def test_other_threads_and_code_outside_keep_their_warnings_and_logs(recwarn, caplog):
    caplog.set_level(logging.WARNING)
    inside = threading.Event()
    done = threading.Event()

    def reader():
        with quiet.quiet_read("a.dcm") as captured:
            inside.set()
            done.wait(10)
            logging.getLogger("PIL.SomePlugin").warning("plugin complaint")
        reader.captured = captured

    thread = threading.Thread(target=reader)
    thread.start()
    inside.wait(10)
    # Another thread, outside any quiet_read, while the reader is inside one.
    warnings.warn("unrelated warning", UserWarning, stacklevel=1)
    logging.getLogger("pydicom").warning("unrelated record")
    done.set()
    thread.join()
    assert [str(w.message) for w in recwarn] == ["unrelated warning"]
    assert "unrelated record" in caplog.text and "plugin complaint" not in caplog.text
    assert reader.captured.messages == ["PIL: plugin complaint"]


def test_unreadable_raised_inside_without_messages_passes_unchanged():
    with pytest.raises(UnreadableImage) as info:
        with quiet.quiet_read("x.dcm"):
            raise UnreadableImage("broken", "x.dcm")
    assert str(info.value) == "x.dcm: broken"


def test_explain_adds_only_what_the_reason_does_not_already_say():
    captured = quiet.Captured("x.dcm", redact_quotes=True)
    captured.add("pydicom", "Pillow does not support 'JPEG Extended' for 12-bit samples")
    reason = "decoders failed (pillow: Pillow does not support 'JPEG Extended' for 12-bit samples)"
    assert captured.explain(reason) == reason
    captured.add("pydicom", "Expected explicit VR, but found implicit VR")
    captured.add("pydicom", "Expected explicit VR, but found implicit VR")  # said twice: once
    assert (
        captured.explain(reason)
        == f"{reason} [pydicom: Expected explicit VR, but found implicit VR]"
    )
    assert captured.count == 2
