"""Video clips, DICOM and NIfTI as image sources (alexkit.media).

Fixtures are generated here: clips encoded with PyAV, DICOM written with pydicom,
volumes with nibabel. Oracles are hand formulas (DICOM linear window, percentiles,
averages), never alexkit's own output.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import subprocess
import sys
import threading

import numpy as np
import pytest

from alexkit.errors import DataError, MissingExtraError, RecipeError, UsageError
from alexkit.media import (
    MEDIA_EXTENSIONS,
    MediaOptions,
    aggregate,
    aggregate_labels,
    clear_cache,
    decode_member,
    expand,
    media_kind,
    parse_item,
    pool_frames,
)

av = pytest.importorskip("av")
pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


# ------------------------------------------------------------------ video fixtures

COLOURS = [((i * 13) % 256, (i * 29) % 256, (255 - i * 7) % 256) for i in range(20)]


def write_clip(path, frames, fps=10, codec="mpeg4"):
    """Encode a list of (H, W, 3) uint8 frames."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def solid_frames(colours, size=(48, 64)):
    return [np.full((*size, 3), c, dtype=np.uint8) for c in colours]


def bits_frame(i, nbits=10):
    """Frame whose 10 vertical bars spell ``i`` in binary: survives lossy coding exactly."""
    img = np.zeros((16, 8 * nbits, 3), dtype=np.uint8)
    for b in range(nbits):
        if i >> b & 1:
            img[:, 8 * b : 8 * b + 8] = 255
    return img


def read_bits(img, nbits=10):
    bars = img[:, :, 0].astype(float).reshape(img.shape[0], nbits, 8)[:, :, 2:6].mean(axis=(0, 2))
    return int(sum(1 << b for b in range(nbits) if bars[b] > 128))


# ------------------------------------------------------------------ video tests


@pytest.mark.parametrize(("codec", "ext"), [("h264", "mp4"), ("mjpeg", "avi"), ("mpeg4", "avi")])
def test_clip_uniform_sampling_gives_frames_times_and_colours(tmp_path, codec, ext):
    clip = write_clip(tmp_path / f"c.{ext}", solid_frames(COLOURS), fps=10, codec=codec)
    opts = MediaOptions(frames_per_clip=4)
    pairs = expand(clip, opts)
    # 20 frames, 4 segments of 5: centres 2.5, 7.5, ... floor to 2, 7, 12, 17.
    assert [item for item, _ in pairs] == [
        f"{clip}#frame=2,t=0.200",
        f"{clip}#frame=7,t=0.700",
        f"{clip}#frame=12,t=1.200",
        f"{clip}#frame=17,t=1.700",
    ]
    assert {group for _, group in pairs} == {f"clip:{clip}"}
    for item, _ in pairs:
        frame = parse_item(item)[1]["frame"]
        img = decode_member(item, opts)
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert np.abs(img.reshape(-1, 3).mean(axis=0) - COLOURS[frame]).max() < 8


def test_clip_every_seconds_and_short_clip(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", solid_frames(COLOURS), fps=10)
    items = [i for i, _ in expand(clip, MediaOptions(every_seconds=0.5))]
    assert [parse_item(i)[1] for i in items] == [
        {"frame": 0, "t": 0.0},
        {"frame": 5, "t": 0.5},
        {"frame": 10, "t": 1.0},
        {"frame": 15, "t": 1.5},
    ]
    # A clip shorter than frames_per_clip gives every frame once.
    short = write_clip(tmp_path / "s.mp4", solid_frames(COLOURS[:3]), fps=10)
    assert len(expand(short, MediaOptions(frames_per_clip=8))) == 3


def test_long_clip_seeks_to_exact_frames_from_many_threads(tmp_path):
    clip = write_clip(tmp_path / "long.mp4", [bits_frame(i) for i in range(300)], codec="h264")
    opts = MediaOptions(frames_per_clip=3)
    items = [i for i, _ in expand(clip, opts)]
    assert [parse_item(i)[1]["frame"] for i in items] == [50, 150, 250]
    # A frame outside the sample (other options) decodes on its own, exactly.
    items += [f"{clip}#frame=123,t=12.300", f"{clip}#frame=299,t=29.900"]
    results: dict[str, int] = {}

    def work(item):
        results[item] = read_bits(decode_member(item, opts))

    threads = [threading.Thread(target=work, args=(it,)) for it in items * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {parse_item(k)[1]["frame"]: v for k, v in results.items()} == {
        50: 50,
        150: 150,
        250: 250,
        123: 123,
        299: 299,
    }


def test_portrait_clip_is_turned_upright(tmp_path):
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[:10, :10] = 255  # a white block at the stored top-left
    with av.open(str(tmp_path / "p.mp4"), "w") as container:
        stream = container.add_stream("h264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip("this PyAV cannot write a display rotation (needs a newer av)")
        stream.set_display_rotation(90)  # display: 90 degrees counter-clockwise
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    item = expand(str(tmp_path / "p.mp4"), MediaOptions(frames_per_clip=1))[0][0]
    out = decode_member(item)
    assert out.shape == (64, 48, 3)
    # Turned counter-clockwise, the top-left corner lands bottom-left.
    assert out[-8:, :8].mean() > 200 and out[:8, :8].mean() < 50


def test_broken_and_truncated_clips_are_unreadable(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    with pytest.raises(DataError, match="junk.mp4: cannot read video"):
        expand(str(junk))
    good = write_clip(tmp_path / "good.mp4", solid_frames(COLOURS), codec="h264")
    data = open(good, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.mp4"):
        expand(str(cut))
    with pytest.raises(DataError, match="out of range"):
        decode_member(f"{good}#frame=99,t=9.900")


# ------------------------------------------------------------------ DICOM fixtures

PATIENT = {"PatientName": "DOE^JANE", "PatientID": "MRN0042", "PatientBirthDate": "19700101"}


def write_dicom(path, stored, *, photometric="MONOCHROME2", bits_stored=12, signed=False, **tags):
    """Write a grayscale DICOM (16-bit storage) holding ``stored`` (2-D, or 3-D frames)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = tags.pop("transfer_syntax", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in {**PATIENT, **tags}.items():
        setattr(ds, key, value)
    stored = np.asarray(stored)
    ds.Rows, ds.Columns = stored.shape[-2:]
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if "PixelData" not in tags:
        ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def dicom_window(x, c, w):
    """The DICOM PS3.3 C.11.2.1.2.1 linear window, written out by hand."""
    out = np.empty(x.shape)
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    for idx, v in np.ndenumerate(x):
        if v <= lo:
            out[idx] = 0
        elif v > hi:
            out[idx] = 255
        else:
            out[idx] = ((v - (c - 0.5)) / (w - 1) + 0.5) * 255
    return np.rint(out).astype(np.uint8)


# 12-bit values in 16-bit storage, with junk in the 4 unused high bits that must be masked.
STORED = np.array([[0, 100, 500, 1000], [1024, 1100, 1500, 4095]], dtype=np.uint16)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_rescale_window_and_inversion_match_hand_computation(tmp_path, photometric):
    path = write_dicom(
        tmp_path / "ct.dcm",
        STORED | 0xA000,
        photometric=photometric,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=100,
        WindowWidth=800,
    )
    hu = STORED.astype(float) * 2 - 1024
    invert = photometric == "MONOCHROME1"

    def expect(gray):
        gray = 255 - gray if invert else gray
        return np.repeat(gray[:, :, None], 3, axis=2)

    # Recipe window wins over the file's tags, and travels inside the item.
    opts = MediaOptions(window_center=40, window_width=400)
    img = decode_member(path, opts)
    assert img.dtype == np.uint8 and img.shape == (2, 4, 3)
    np.testing.assert_array_equal(img, expect(dicom_window(hu, 40, 400)))
    [(item, _)] = expand(path, opts)
    assert item == f"{path}#wc=40,ww=400"
    np.testing.assert_array_equal(decode_member(item), expect(dicom_window(hu, 40, 400)))
    # "auto" uses the file's WindowCenter/WindowWidth.
    np.testing.assert_array_equal(decode_member(path), expect(dicom_window(hu, 100, 800)))
    # Without window tags: the 0.5..99.5 percentiles of the rescaled values.
    bare = write_dicom(
        tmp_path / "bare.dcm",
        STORED,
        photometric=photometric,
        RescaleSlope=2,
        RescaleIntercept=-1024,
    )
    lo, hi = np.percentile(hu, [0.5, 99.5])
    auto = np.rint(np.clip((hu - lo) / (hi - lo) * 255, 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(decode_member(bare), expect(auto))


def test_dicom_signed_12_bit_and_multiframe(tmp_path):
    values = np.array([[-2048, -1, 0], [1, 2047, 5]], dtype=np.int16)
    stored = (values.astype(np.int32) & 0x0FFF).astype(np.uint16).view(np.int16)
    frames = np.stack([stored, stored])
    path = write_dicom(tmp_path / "mf.dcm", frames, signed=True)
    pairs = expand(path)
    assert [i for i, _ in pairs] == [f"{path}#frame=0", f"{path}#frame=1"]
    opts = MediaOptions(window_center=0, window_width=101)
    for item, _ in pairs:
        np.testing.assert_array_equal(
            decode_member(item, opts)[:, :, 1], dicom_window(values, 0, 101)
        )


def keyed_group(home, patient_id: bytes) -> str:
    """The split group by hand: HMAC-SHA256 keyed with the installation's secret file."""
    key = bytes.fromhex((home / "secret.key").read_text().strip())
    return "patient:" + hmac.new(key, patient_id, hashlib.sha256).hexdigest()[:16]


def test_no_patient_identifier_reaches_items_groups_errors_or_logs(tmp_path, caplog, alexkit_home):
    caplog.set_level(logging.DEBUG)
    good = write_dicom(tmp_path / "a.dcm", STORED)
    short = write_dicom(tmp_path / "b.dcm", STORED, PixelData=b"\x00\x01")  # truncated pixels
    texts = []
    for path in (good, short):
        pairs = expand(path)
        texts += [f"{item} {group}" for item, group in pairs]
        try:
            texts.append(str(decode_member(pairs[0][0]).shape))
        except DataError as exc:
            texts.append(str(exc))
    assert texts[0] == f"{good} {keyed_group(alexkit_home, b'MRN0042')}"
    assert "cannot decode DICOM pixels" in texts[-1]
    everything = " ".join(texts) + caplog.text
    for secret in ("DOE", "JANE", "MRN0042", "19700101"):
        assert secret not in everything


def test_dicom_unreadable_and_missing_decoder_messages(tmp_path):
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x00" * 300)
    with pytest.raises(DataError, match="fake.dcm: not a DICOM file"):
        decode_member(str(fake))

    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import HTJ2KLossless, JPEGLosslessSV1, JPEGLSLossless

    missing = [
        u
        for u in (JPEGLosslessSV1, JPEGLSLossless, HTJ2KLossless)
        if not get_decoder(u).is_available
    ]
    if not missing:
        pytest.skip("every candidate compressed syntax has a decoder installed here")
    uid = missing[0]
    path = write_dicom(
        tmp_path / "j.dcm", STORED, transfer_syntax=uid, PixelData=encapsulate([b"\xff\xd8junk"])
    )
    with pytest.raises(DataError) as info:
        decode_member(path)
    message = str(info.value)
    assert uid.name in message and "pip install pylibjpeg" in message
    assert "\n" not in message


def test_dicom_series_folder_reads_as_volume_sorted_by_position(tmp_path, alexkit_home):
    study = tmp_path / "study1"
    study.mkdir()
    series_uid = "1.2.3.4.5"
    images = {z: np.minimum(STORED + 100 * z, 4095) for z in range(3)}
    # File names deliberately out of slice order: position, not name, decides.
    for name, z in [("x1.dcm", 2), ("x2.dcm", 0), ("x3.dcm", 1)]:
        write_dicom(
            study / name,
            images[z],
            SeriesInstanceUID=series_uid,
            ImagePositionPatient=[0, 0, 5.0 * z],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        )
    assert media_kind(str(study)) == "dicom-series"
    opts = MediaOptions(window_center=1000, window_width=2000, skip_empty=False)
    pairs = expand(str(study), opts)
    assert [i for i, _ in pairs] == [f"{study}#slice={k},axis=2,wc=1000,ww=2000" for k in range(3)]
    assert {g for _, g in pairs} == {keyed_group(alexkit_home, b"MRN0042")}
    for k, (item, _) in enumerate(pairs):
        np.testing.assert_array_equal(
            decode_member(item, opts)[:, :, 0], dicom_window(images[k].astype(float), 1000, 2000)
        )
    # A folder of unrelated files (different series) is not a volume.
    xrays = tmp_path / "xrays"
    xrays.mkdir()
    for i in range(2):
        write_dicom(xrays / f"{i}.dcm", STORED, SeriesInstanceUID=f"9.{i}")
    assert media_kind(str(xrays)) is None


def test_patient_groups_keep_each_patient_in_one_split(tmp_path):
    from sklearn.model_selection import GroupShuffleSplit

    paths, patients = [], []
    for p in range(4):
        for i in range(3):
            paths.append(write_dicom(tmp_path / f"p{p}_{i}.dcm", STORED, PatientID=f"ID{p}"))
            patients.append(p)
    groups = [expand(path)[0][1] for path in paths]
    assert len(set(groups)) == 4
    # Same patient → same group, different patients → different groups.
    for a in range(len(paths)):
        for b in range(len(paths)):
            assert (groups[a] == groups[b]) == (patients[a] == patients[b])
    train, test = next(GroupShuffleSplit(test_size=0.5, random_state=0).split(paths, groups=groups))
    assert not {patients[i] for i in train} & {patients[i] for i in test}


def test_short_numeric_patient_id_is_not_found_by_enumerating_bare_hashes(
    tmp_path, monkeypatch, alexkit_home
):
    path = write_dicom(tmp_path / "p.dcm", STORED, PatientID="04711")
    group = expand(path)[0][1]
    # An attacker hashes every 5-digit ID with bare sha256: none matches the group.
    candidates = [f"{n:05d}".encode() for n in range(100_000)]
    bare = {"patient:" + hashlib.sha256(c).hexdigest()[:16] for c in candidates}
    assert group not in bare
    # Only with the installation's key does enumeration work (so the group is the keyed hash).
    assert group == keyed_group(alexkit_home, b"04711")
    # ALEXKIT_PATIENT_SALT overrides the key: the same secret on every machine of a study.
    monkeypatch.setenv("ALEXKIT_PATIENT_SALT", "study-secret")
    clear_cache()
    salted = expand(path)[0][1]
    oracle = hmac.new(b"study-secret", b"04711", hashlib.sha256).hexdigest()[:16]
    assert salted == f"patient:{oracle}" and salted != group


def palette_dataset(indices, lut_rgb, first_mapped, entry_bits=16):
    """A PALETTE COLOR dataset: 8-bit indices and per-channel lookup tables."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "PAL1"
    ds.Rows, ds.Columns = indices.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    dtype = np.uint16 if entry_bits == 16 else np.uint8
    for k, colour in enumerate(("Red", "Green", "Blue")):
        setattr(
            ds,
            f"{colour}PaletteColorLookupTableDescriptor",
            [len(lut_rgb), first_mapped, entry_bits],
        )
        data = np.asarray(lut_rgb)[:, k].astype(dtype).tobytes()
        if len(data) % 2:
            data += b"\x00"
        setattr(ds, f"{colour}PaletteColorLookupTableData", data)
    ds.PixelData = indices.astype(np.uint8).tobytes()
    return ds


def test_palette_colour_dicom_goes_through_its_lookup_table(tmp_path):
    rng = np.random.default_rng(3)
    lut16 = rng.integers(0, 65536, size=(6, 3))
    # Below the first mapped value: entry 0; above the table: the last (PS3.3 C.7.6.3.1.5).
    indices = np.array([[0, 10, 11, 12], [13, 14, 15, 200]])
    ds = palette_dataset(indices, lut16, first_mapped=10)
    path = str(tmp_path / "pal.dcm")
    ds.save_as(path, enforce_file_format=True)
    entry = np.clip(indices - 10, 0, len(lut16) - 1)
    expected = (lut16[entry] >> 8).astype(np.uint8)  # 16-bit entries, top 8 bits
    np.testing.assert_array_equal(decode_member(path), expected)
    # 8-bit entries pass through as they are.
    lut8 = rng.integers(0, 256, size=(4, 3))
    idx8 = np.array([[0, 1], [2, 3]])
    path8 = str(tmp_path / "pal8.dcm")
    palette_dataset(idx8, lut8, first_mapped=0, entry_bits=8).save_as(
        path8, enforce_file_format=True
    )
    np.testing.assert_array_equal(decode_member(path8), lut8[idx8].astype(np.uint8))


def test_dicom_without_preamble_is_read_with_force(tmp_path, alexkit_home):
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError

    def acr_nema(path, with_pixels, little_endian=True):
        ds = Dataset()  # no file meta, no preamble, no "DICM": an old ACR-NEMA-style file
        ds.PatientID = "ACR7"
        ds.Rows, ds.Columns = STORED.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 1000, 2000
        if with_pixels:
            ds.PixelData = STORED.astype("<u2" if little_endian else ">u2").tobytes()
        ds.save_as(
            path, implicit_vr=little_endian, little_endian=little_endian, enforce_file_format=False
        )
        with open(path, "rb") as fh:
            assert fh.read(132)[128:132] != b"DICM"
        with pytest.raises(InvalidDicomError):
            dcmread(path)  # pydicom alone refuses it
        return str(path)

    for little in (True, False):
        path = acr_nema(tmp_path / f"old{int(little)}.dcm", with_pixels=True, little_endian=little)
        [(item, group)] = expand(path)
        assert item == path and group == keyed_group(alexkit_home, b"ACR7")
        np.testing.assert_array_equal(
            decode_member(path)[:, :, 0], dicom_window(STORED.astype(float), 1000, 2000)
        )
    bare = acr_nema(tmp_path / "nopix.dcm", with_pixels=False)
    assert len(expand(bare)) == 1
    with pytest.raises(DataError, match="nopix.dcm: DICOM file has no pixel data"):
        decode_member(bare)


def test_12_bit_lossy_jpeg_names_the_syntax_and_the_decoder_package(tmp_path):
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    decoder = get_decoder(JPEGExtended12Bit)
    if {"pylibjpeg", "gdcm"} & set(getattr(decoder, "_available", {})):
        pytest.skip("a 12-bit JPEG decoder is installed here")
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, "JPEG")
    jpeg = bytearray(buf.getvalue())
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 1], jpeg[sof + 4] = 0xC1, 12  # SOF1 (extended), 12-bit samples
    path = write_dicom(
        tmp_path / "j12.dcm",
        np.zeros((8, 8)),
        transfer_syntax=JPEGExtended12Bit,
        PixelData=encapsulate([bytes(jpeg)]),
    )
    with pytest.raises(DataError) as info:
        decode_member(path)
    message = str(info.value)
    assert JPEGExtended12Bit.name in message and str(JPEGExtended12Bit) in message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in message and "\n" not in message


# ------------------------------------------------------------------ NIfTI


def make_volume():
    """(X=6, Y=5, Z=8) int16 volume; z=0,1 and 7 are background (0), z=6 one voxel."""
    vol = np.zeros((6, 5, 8), dtype=np.int16)
    rng = np.random.default_rng(0)
    vol[:, :, 2:6] = rng.integers(1, 1000, size=(6, 5, 4))
    vol[3, 2, 6] = 700
    return vol


def test_nifti_slices_axis_range_empty_skip_and_pixels(tmp_path):
    vol = make_volume()
    path = str(tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    opts = MediaOptions(window_center=500, window_width=1000)
    pairs = expand(path, opts)
    assert [parse_item(i)[1] for i, _ in pairs] == [
        {"slice": k, "axis": 2, "wc": 500.0, "ww": 1000.0} for k in range(2, 7)
    ]
    assert {g for _, g in pairs} == {f"volume:{path}"}
    for item, _ in pairs:
        k = parse_item(item)[1]["slice"]
        expected = dicom_window(np.flipud(vol[:, :, k].T).astype(float), 500, 1000)
        img = decode_member(item)  # the item carries its window
        assert img.shape == (5, 6, 3)
        np.testing.assert_array_equal(img[:, :, 2], expected)
    # Range and step, then empty-slice skipping; skip_empty=False keeps all.
    ranged = expand(path, MediaOptions(slice_start=1, slice_stop=8, slice_step=2))
    assert [parse_item(i)[1]["slice"] for i, _ in ranged] == [3, 5]
    assert len(expand(path, MediaOptions(skip_empty=False))) == 8
    # Slice 6 has 1 voxel of 30 above background: empty at a 5% threshold.
    mostly_empty = expand(path, MediaOptions(empty_fraction=0.05))
    assert [parse_item(i)[1]["slice"] for i, _ in mostly_empty] == [2, 3, 4, 5]
    sagittal = expand(path, MediaOptions(axis=0))
    assert [parse_item(i)[1] for i, _ in sagittal] == [{"slice": k, "axis": 0} for k in range(6)]
    assert decode_member(sagittal[0][0]).shape == (8, 5, 3)
    # Automatic window: volume percentiles.
    lo, hi = np.percentile(vol, [0.5, 99.5])
    auto = np.rint(np.clip((vol[:, :, 4] - lo) / (hi - lo) * 255, 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(
        decode_member(f"{path}#slice=4,axis=2")[:, :, 0], np.flipud(auto.T)
    )


def test_nifti_orientation_is_canonical(tmp_path):
    vol = make_volume()
    ras, las = str(tmp_path / "ras.nii"), str(tmp_path / "las.nii")
    nib.save(nib.Nifti1Image(vol, np.eye(4)), ras)
    # Same anatomy stored with x running right→left.
    nib.save(nib.Nifti1Image(vol[::-1].copy(), np.diag([-1.0, 1, 1, 1])), las)
    opts = MediaOptions(window_center=500, window_width=1000)
    for k in (2, 4):
        np.testing.assert_array_equal(
            decode_member(f"{ras}#slice={k},axis=2", opts),
            decode_member(f"{las}#slice={k},axis=2", opts),
        )


def test_truncated_volume_is_unreadable(tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(make_volume().astype(np.float32), np.eye(4)), str(path))
    data = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.nii.gz: cannot read NIfTI volume"):
        expand(str(cut))


def test_per_volume_aggregation_equals_hand_average():
    items = ["a.nii#slice=3,axis=2", "b.nii#slice=1,axis=2", "a.nii#slice=4,axis=2", "c.png"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])
    keys, mean = aggregate(items, probs, by="volume")
    assert keys == ["a.nii", "b.nii", "c.png"]
    np.testing.assert_allclose(mean, [[0.7, 0.3], [0.2, 0.8], [0.3, 0.7]])
    assert aggregate_labels(items, [1, 0, 1, 1])[1].tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="a.nii"):
        aggregate_labels(items, [1, 0, 0, 1])
    keys, by_group = aggregate(items, probs, by="group", groups=["g", "g", "h", "h"])
    np.testing.assert_allclose(by_group, [[0.55, 0.45], [0.4, 0.6]])


def test_pool_frames_mean_and_max():
    feats = np.array([[1.0, 4.0], [3.0, 0.0], [5.0, 5.0]])
    items = ["v.mp4#frame=0,t=0.000", "v.mp4#frame=5,t=0.500", "w.mp4#frame=0,t=0.000"]
    names, mean = pool_frames(feats, items, "mean")
    assert names == ["v.mp4", "w.mp4"]
    np.testing.assert_allclose(mean, [[2.0, 2.0], [5.0, 5.0]])
    np.testing.assert_allclose(pool_frames(feats, items, "max")[1], [[3.0, 4.0], [5.0, 5.0]])
    with pytest.raises(UsageError):
        pool_frames(feats, items, "median")


# ------------------------------------------------------------------ API details


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("a/b.mp4#frame=12,t=0.480", ("a/b.mp4", {"frame": 12, "t": 0.48})),
        ("v.nii.gz#slice=40,axis=2", ("v.nii.gz", {"slice": 40, "axis": 2})),
        ("x.dcm", ("x.dcm", {})),
        ("my#file.png", ("my#file.png", {})),
        ("odd#frame=x", ("odd#frame=x", {})),
    ],
)
def test_parse_item(item, expected):
    assert parse_item(item) == expected


def test_extensions_and_options_validation():
    assert {".mp4", ".avi", ".dcm", ".nii", ".nii.gz"} <= MEDIA_EXTENSIONS
    assert media_kind("scan.NII.GZ") == "nifti" and media_kind("photo.jpg") is None
    with pytest.raises(UsageError, match="window_center and window_width"):
        MediaOptions(window_center=40)
    with pytest.raises(UsageError, match="axis"):
        MediaOptions(axis=3)
    opts = MediaOptions.from_mapping({"window_center": 40, "window_width": 400, "axis": 1})
    assert (opts.window_center, opts.axis) == (40, 1)
    with pytest.raises(RecipeError, match="unknown media key.*'frames'"):
        MediaOptions.from_mapping({"frames": 4}, source="recipes/video.toml")
    with pytest.raises(RecipeError, match="'media.window_width' must be a number"):
        MediaOptions.from_mapping({"window_center": 40, "window_width": "80"})
    with pytest.raises(RecipeError, match="ct.toml: axis must be 0, 1 or 2"):
        MediaOptions.from_mapping({"axis": 5}, source="ct.toml")


@pytest.mark.parametrize(
    ("module", "suffix", "extra"),
    [("av", ".mp4", "video"), ("pydicom", ".dcm", "medical"), ("nibabel", ".nii.gz", "medical")],
)
def test_missing_extra_names_the_install_command(tmp_path, monkeypatch, module, suffix, extra):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingExtraError) as info:
        expand(str(path))
    assert f"pip install 'alexkit[{extra}]'" in str(info.value) and module in str(info.value)


def test_import_is_light():
    code = (
        "import sys, alexkit.media; "
        "print(sorted(m for m in ('av', 'pydicom', 'nibabel', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ integration


def test_load_spec_splits_never_separate_a_clip_or_a_patient(tmp_path):
    from alexkit.data import load_spec

    root = tmp_path / "clips"
    for c, name in enumerate(["run", "walk"]):
        (root / name).mkdir(parents=True)
        for k in range(4):
            colours = [COLOURS[(5 * c + k + j) % 20] for j in range(10)]
            write_clip(root / name / f"{name}{k}.mp4", solid_frames(colours, size=(16, 16)))
    spec = load_spec(root, val_fraction=0.5, seed=0, media_options=MediaOptions(frames_per_clip=3))
    assert len(spec) == 2 * 4 * 3
    split_of: dict[str, set[str]] = {}
    for item, split, group in zip(spec.items, spec.splits, spec.groups, strict=True):
        split_of.setdefault(parse_item(item)[0], set()).add(split)
        assert group == f"clip:{parse_item(item)[0]}"
    assert all(len(s) == 1 for s in split_of.values())
    assert {next(iter(s)) for s in split_of.values()} == {"train", "val"}

    scans = tmp_path / "scans"
    for name in ["normal", "hemorrhage"]:
        (scans / name).mkdir(parents=True)
        for p in range(3):
            for i in range(2):  # two slices per patient
                write_dicom(scans / name / f"p{p}_{i}.dcm", STORED, PatientID=f"{name}-{p}")
    spec = load_spec(scans, val_fraction=0.4, seed=1)
    by_group: dict[str, set[str]] = {}
    for split, group in zip(spec.splits, spec.groups, strict=True):
        by_group.setdefault(group, set()).add(split)
    assert len(by_group) == 6 and all(len(s) == 1 for s in by_group.values())
    assert not any("normal-" in g or "hemorrhage-" in g for g in spec.groups)


def test_decode_image_dispatches_media_items(tmp_path):
    from alexkit.data.decode import decode_image

    clip = write_clip(tmp_path / "c.mp4", solid_frames(COLOURS), codec="h264")
    item = expand(clip, MediaOptions(frames_per_clip=2))[1][0]
    np.testing.assert_array_equal(decode_image(item), decode_member(item))
    dcm = write_dicom(tmp_path / "a.dcm", STORED, RescaleSlope=2, RescaleIntercept=-1024)
    [(windowed, _)] = expand(dcm, MediaOptions(window_center=40, window_width=400))
    hu = STORED.astype(float) * 2 - 1024
    np.testing.assert_array_equal(decode_image(windowed)[:, :, 0], dicom_window(hu, 40, 400))


@pytest.mark.parametrize("name", ["video", "ct"])
def test_media_recipes_parse_and_their_media_settings_are_valid(name):
    from alexkit.recipes import load_recipe

    recipe = load_recipe(name)
    assert recipe.name == name and recipe.dataset.url.startswith("https://")
    opts = recipe.media  # the [media] table, parsed into MediaOptions by recipes.py
    assert isinstance(opts, MediaOptions)
    if name == "ct":
        assert recipe.grayscale and recipe.classes == ("normal", "hemorrhage")
        assert (opts.window_center, opts.window_width, opts.axis) == (40, 80, 2)
    else:
        assert opts.frames_per_clip == 8 and recipe.augment.hflip and not recipe.augment.vflip
