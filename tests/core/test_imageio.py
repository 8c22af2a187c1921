import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from core.imageio import ImageError, Limits, decode, encode_png, full_pages, full_pages_file, probe
from tests.conftest import many_frames, png, smooth_image

LIMITS = Limits(max_bytes=5_000_000, max_pixels=4_000_000, max_side=4000)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"hello, not an image at all", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
])
def test_refuses_non_images(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        decode(data, LIMITS)


def test_refuses_truncated_png() -> None:
    data = png(smooth_image(128, 128))
    with pytest.raises(ImageError, match="broken or truncated"):
        decode(data[: len(data) // 2], LIMITS)


@pytest.mark.parametrize("compression", ["tiff_lzw", "tiff_adobe_deflate"])
@pytest.mark.parametrize("kept", [6, 9, 0.5])
def test_a_compressed_tiff_cut_short_is_called_truncated(compression: str, kept: float) -> None:
    buf = io.BytesIO()  # Pillow writes a compressed TIFF's directory after the pixels, as many scanners do
    Image.fromarray((smooth_image(64, 64) * 255).astype(np.uint8)).save(buf, "TIFF", compression=compression)
    data = buf.getvalue()
    with pytest.raises(ImageError, match="broken or truncated image: the TIFF's directory is cut off"):
        decode(data[:int(kept if kept > 1 else len(data) * kept)], LIMITS)
    assert decode(data, LIMITS).pixels.shape == (64, 64, 3)


def test_refuses_decompression_bomb_before_decoding() -> None:
    # 20000 x 20000 gray PNG of zeros compresses to a few hundred KB; only the header may be read
    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, format="PNG")
    with pytest.raises(ImageError, match="20000x20000|decompression bomb"):
        decode(buf.getvalue(), Limits(max_bytes=10_000_000, max_pixels=100_000_000, max_side=4000))


def test_refuses_too_many_bytes() -> None:
    with pytest.raises(ImageError, match="limit is 10"):
        decode(png(smooth_image()), Limits(10, 10**6, 1000))


def test_rgba_keeps_alpha_through_png_round_trip() -> None:
    rgba = np.dstack([smooth_image(), np.full((64, 80), 77, np.uint8)])
    pic = decode(png(rgba), LIMITS)
    assert pic.pixels.shape == (64, 80, 3) and pic.alpha is not None
    back = np.asarray(Image.open(io.BytesIO(encode_png(pic))))
    assert back.shape == (64, 80, 4) and (back[..., 3] == 77).all()
    assert np.array_equal(back[..., :3], rgba[..., :3])


def test_sixteen_bit_gray_keeps_depth() -> None:
    arr = (np.linspace(0, 65535, 64 * 80).reshape(64, 80)).astype(np.uint16)
    pic = decode(png(arr), LIMITS)
    assert pic.bit_depth == 16 and pic.pixels.shape == (64, 80, 1)
    back = np.asarray(Image.open(io.BytesIO(encode_png(pic))))
    assert back.dtype == np.uint16 and np.abs(back.astype(int) - arr).max() <= 1


def test_exif_orientation_is_applied() -> None:
    img = Image.fromarray(smooth_image(40, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode(buf.getvalue(), LIMITS).shape == (60, 40)


def with_exif_orientation(png_bytes: bytes, orientation: int) -> bytes:
    """The PNG with an eXIf chunk before its data (cv2 and Pillow cannot write one into a 16-bit colour PNG)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()[6:]  # without "Exif\0\0"
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    at = png_bytes.index(b"IDAT") - 4
    return png_bytes[:at] + chunk + png_bytes[at:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_colour_is_turned_as_its_exif_says_like_eight_bit(orientation: int) -> None:
    import cv2
    rgb = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    eight = decode(with_exif_orientation(png(rgb), orientation), LIMITS)
    ok, sixteen = cv2.imencode(".png", rgb[..., ::-1].astype(np.uint16) * 257)
    assert ok
    deep = decode(with_exif_orientation(sixteen.tobytes(), orientation), LIMITS)
    assert deep.bit_depth == 16 and np.allclose(deep.pixels, eight.pixels, atol=1e-6)


def test_a_colour_key_is_transparency() -> None:
    rgb = np.full((4, 4, 3), 50, np.uint8)
    rgb[0, 0] = (1, 2, 3)
    for image, key in ((Image.fromarray(rgb), (1, 2, 3)), (Image.fromarray(rgb[..., 0]), 50)):
        buf = io.BytesIO()
        image.save(buf, format="PNG", transparency=key)
        pic = decode(buf.getvalue(), LIMITS)
        assert pic.alpha is not None and (pic.alpha == 0).sum() == (1 if image.mode == "RGB" else 15)


def test_palette_and_gray_modes() -> None:
    assert decode(png(smooth_image(channels=1)), LIMITS).pixels.shape == (64, 80, 1)
    buf = io.BytesIO()
    Image.fromarray(smooth_image()).convert("P").save(buf, format="PNG")
    assert decode(buf.getvalue(), LIMITS).pixels.shape == (64, 80, 3)


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_tiff_keeps_depth_and_alpha(channels: int) -> None:
    """A film scan's 16-bit TIFF: Pillow alone would keep each sample's high byte."""
    import cv2
    deep = np.random.default_rng(channels).integers(0, 65536, (6, 7, channels), dtype=np.uint16)
    ok, tiff = cv2.imencode(".tiff", deep)  # BGR(A)
    assert ok
    pic = decode(tiff.tobytes(), LIMITS)
    assert pic.bit_depth == 16 and pic.pixels.shape == (6, 7, 3)
    assert np.abs(pic.pixels * 65535 - deep[..., 2::-1]).max() < 0.5
    assert (pic.alpha is None) == (channels == 3)
    back = cv2.imdecode(np.frombuffer(encode_png(pic), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, deep)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_colour_tiff_is_turned_as_its_orientation_tag_says(orientation: int) -> None:
    import tifffile
    rgb = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    files = []
    for arr in (rgb, rgb.astype(np.uint16) * 257):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="rgb", extratags=[(0x0112, "H", 1, orientation, True)])
        files.append(decode(buf.getvalue(), LIMITS))
    eight, deep = files
    assert eight.shape == ((5, 3) if orientation > 4 else (3, 5))
    assert deep.bit_depth == 16 and np.allclose(deep.pixels, eight.pixels, atol=1e-6)


def test_sixteen_bit_tiff_with_premultiplied_alpha_reads_as_the_eight_bit_one() -> None:
    import tifffile
    rgb = np.array([[[200, 100, 40]]], np.float64)
    files = []
    for depth, top in ((np.uint8, 255), (np.uint16, 65535)):
        straight = rgb / 255 * top
        rgba = np.dstack([straight * 0.5, np.full((1, 1), top * 0.5)]).round().astype(depth)  # alpha 0.5
        buf = io.BytesIO()
        tifffile.imwrite(buf, rgba, photometric="rgb", extrasamples=[1])  # associated alpha
        files.append(decode(buf.getvalue(), LIMITS))
    eight, deep = files
    assert deep.bit_depth == 16 and np.allclose(deep.pixels, eight.pixels, atol=2 / 255), (deep.pixels, eight.pixels)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_planar_sixteen_bit_tiff_reads_as_the_interleaved_one(compression: str | None) -> None:
    """Photoshop's "per channel" order: OpenCV read it as noise, two thirds of it memory left from an earlier
    decode (of another user's image, in a worker)."""
    import tifffile
    rgba = np.random.default_rng(1).integers(0, 65536, (5, 7, 4), dtype=np.uint16)
    files = []
    for arr, planar in ((rgba, "contig"), (np.moveaxis(rgba, -1, 0), "separate")):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="rgb", planarconfig=planar, extrasamples=[2], compression=compression,
                         extratags=[(0x0112, "H", 1, 6, True)])  # turned a quarter
        files.append(decode(buf.getvalue(), LIMITS))
    interleaved, planar = files
    assert planar.bit_depth == 16 and planar.shape == (7, 5) and np.array_equal(planar.pixels, interleaved.pixels)
    assert planar.alpha is not None and np.array_equal(planar.alpha, interleaved.alpha)


@pytest.mark.parametrize("form", ["ICO", "TGA", "PCX"])
def test_formats_pillow_reads_that_are_no_photos_are_refused_by_the_header_check(form: str) -> None:
    """ICO's reader decodes its PNG when it opens, before any limit: a 343 KB icon took 1.3 s and 340 MB."""
    Image.fromarray(smooth_image(16, 16)).save(buf := io.BytesIO(), format=form)
    for check in (lambda: probe(buf.getvalue(), LIMITS), lambda: decode(buf.getvalue(), LIMITS)):
        with pytest.raises(ImageError, match=r"not an image \(unknown format\)"):
            check()


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_a_sixteen_bit_tiffs_unspecified_extra_channel_is_no_alpha(planar: str) -> None:
    """A film scanner's infrared channel (ExtraSamples 0) is dropped, as Pillow drops it from an 8-bit file; it
    made the photo transparent where the infrared was dark."""
    import tifffile
    rgbi = np.random.default_rng(2).integers(0, 65536, (5, 7, 4), dtype=np.uint16)
    rgbi[..., 3] = 0
    pictures = []
    for arr, extra in ((rgbi[..., :3], []), (rgbi, [0])):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr if planar == "contig" else np.moveaxis(arr, -1, 0), photometric="rgb",
                         planarconfig=planar, extrasamples=extra)
        pictures.append(decode(buf.getvalue(), LIMITS))
    rgb, with_infrared = pictures
    assert with_infrared.alpha is None and np.array_equal(with_infrared.pixels, rgb.pixels)


def test_gray_with_premultiplied_alpha_is_read_with_its_alpha_taken_out() -> None:
    """Pillow's "La": it was refused as a broken image."""
    import tifffile
    stored = np.dstack([np.full((3, 4), 100, np.uint8), np.full((3, 4), 128, np.uint8)])  # 200 at half alpha
    tifffile.imwrite(buf := io.BytesIO(), stored, photometric="minisblack", extrasamples=["assocalpha"])
    picture = decode(buf.getvalue(), LIMITS)
    assert picture.pixels.shape == (3, 4, 1) and np.allclose(picture.pixels * 255, 199, atol=1.5)
    assert picture.alpha is not None and np.allclose(picture.alpha * 255, 128)


def test_planar_tiff_in_a_compression_we_cannot_undo_is_refused_with_the_reason() -> None:
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((3, 5, 7), np.uint16), photometric="rgb", planarconfig="separate")
    data = bytearray(buf.getvalue())
    tif = tifffile.TiffFile(io.BytesIO(bytes(data)))
    offset = tif.pages[0].tags["Compression"].valueoffset  # LZW claimed; the data stay as they are
    tif.close()
    data[offset:offset + 2] = (5).to_bytes(2, "little")
    with pytest.raises(ImageError, match="per-channel TIFF compressed with LZW is not supported"):
        decode(bytes(data), LIMITS)


@pytest.mark.parametrize(("compression", "refused"), [("zlib", "decompression bomb: a strip of the TIFF inflates past its size"),
                                                     ("lzma", "compressed with LZMA is not supported")])
def test_a_planar_tiff_whose_strips_inflate_past_its_size_is_refused_before_they_are(compression: str,
                                                                                    refused: str) -> None:
    """tifffile inflates a strip whole before it cuts it to size: 3 MB of zeros would take gigabytes."""
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((3, 2048, 2048), np.uint16), photometric="rgb", planarconfig="separate",
                     compression=compression, rowsperstrip=2048)
    data = bytearray(buf.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages[0].tags
        at = [tags[name].valueoffset for name in ("ImageWidth", "ImageLength", "RowsPerStrip")]
    for offset in at:  # said to be 16x16: a strip holds 512 bytes, and inflates to 8 MB
        data[offset:offset + 4] = (16).to_bytes(4, "little")
    with pytest.raises(ImageError, match=refused):
        decode(bytes(data), LIMITS)


def test_sixteen_bit_gray_tiff_where_zero_is_white_reads_as_the_eight_bit_one() -> None:
    import tifffile
    ramp = np.linspace(0, 1, 12).reshape(3, 4)
    files = []
    for depth, top in ((np.uint8, 255), (np.uint16, 65535)):
        buf = io.BytesIO()
        tifffile.imwrite(buf, (ramp * top).round().astype(depth), photometric="miniswhite")
        files.append(decode(buf.getvalue(), LIMITS))
    eight, deep = files
    assert deep.bit_depth == 16 and np.allclose(deep.pixels, eight.pixels, atol=1 / 255)
    assert deep.pixels[0, 0, 0] > 0.99 and deep.pixels[-1, -1, 0] < 0.01  # 0 is white


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint32])
def test_a_tiff_pillow_cannot_read_is_named_a_tiff_not_an_unknown_format(dtype: type) -> None:
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ones((4, 5, 3), dtype), photometric="rgb")
    with pytest.raises(ImageError, match="TIFF with a sample format or layout that is not supported"):
        decode(buf.getvalue(), LIMITS)


def test_sixteen_bit_gray_png_keeps_its_alpha_and_its_depth() -> None:
    import struct
    import zlib
    gray_alpha = np.random.default_rng(2).integers(0, 65536, (3, 4, 2), dtype=np.uint16)  # PNG colour type 4

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in gray_alpha)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 16, 4, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    pic = decode(data, LIMITS)  # Pillow alone: 8-bit RGBA
    assert pic.bit_depth == 16 and pic.pixels.shape == (3, 4, 1) and pic.alpha is not None
    assert np.abs(pic.pixels[..., 0] * 65535 - gray_alpha[..., 0]).max() < 0.5
    assert np.abs(pic.alpha * 65535 - gray_alpha[..., 1]).max() < 0.5


def test_sixteen_bit_gray_png_keeps_its_transparent_value() -> None:
    gray = np.array([[0, 1000], [65535, 0]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG", transparency=0)
    pic = decode(buf.getvalue(), LIMITS)
    assert pic.bit_depth == 16 and pic.alpha is not None and pic.alpha.tolist() == [[0, 1], [1, 0]]


def _ppm(samples: np.ndarray, maxval: int, plain: bool) -> bytes:
    h, w = samples.shape[:2]
    body = " ".join(map(str, samples.ravel())).encode() if plain else samples.astype(">u2").tobytes()
    return f"P{3 if plain else 6}\n{w} {h}\n{maxval}\n".encode() + body


@pytest.mark.parametrize("maxval", [4095, 65535])
@pytest.mark.parametrize("plain", [False, True])
def test_deep_colour_ppm_keeps_its_depth_scaled_to_sixteen_bits(maxval: int, plain: bool) -> None:
    """A 12- or 16-bit PPM (a raw converter's output): Pillow alone would keep 8 bits of each sample."""
    deep = np.random.default_rng(maxval).integers(0, maxval + 1, (5, 6, 3), dtype=np.uint16)
    pic = decode(_ppm(deep, maxval, plain), LIMITS)
    assert pic.bit_depth == 16 and pic.pixels.shape == (5, 6, 3) and pic.alpha is None
    assert np.abs(pic.pixels - deep / maxval).max() < 1 / 65535


def test_truncated_deep_ppm_is_refused_with_the_reason() -> None:
    data = _ppm(np.ones((5, 6, 3), np.uint16), 65535, plain=False)
    with pytest.raises(ImageError, match="truncated"):
        decode(data[:-7], LIMITS)


def test_a_phones_heic_photo_is_refused_with_what_to_do() -> None:
    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64  # an ISO media file's first box, as an iPhone's
    with pytest.raises(ImageError, match="HEIC/HEIF images are not supported; export the photo as JPEG"):
        decode(heic, LIMITS)


def _profile(space: str) -> bytes:
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes()


@pytest.mark.parametrize("depth", [8, 16])
def test_a_photos_colour_profile_is_kept_in_its_png_and_thumbnail(depth: int) -> None:
    """A phone's Display P3 or a camera's Adobe RGB photo, written without its profile, shows in other colours."""
    from core.imageio import thumbnail_jpeg
    icc = _profile("sRGB")[:-4] + b"wide"  # a profile of RGB that is not the one a viewer assumes
    buf = io.BytesIO()
    if depth == 8:
        Image.fromarray(smooth_image()).save(buf, format="JPEG", icc_profile=icc)
    else:
        import tifffile
        tifffile.imwrite(buf, (smooth_image().astype(np.uint16) * 257), photometric="rgb", iccprofile=icc)
    pic = decode(buf.getvalue(), LIMITS)
    assert pic.icc == icc and pic.bit_depth == depth
    png_bytes = encode_png(pic)
    assert Image.open(io.BytesIO(png_bytes)).info["icc_profile"] == icc
    assert np.array_equal(decode(png_bytes, LIMITS).pixels, pic.pixels)  # the chunk breaks nothing
    assert Image.open(io.BytesIO(thumbnail_jpeg(png_bytes, 32))).info["icc_profile"] == icc


def test_a_profile_for_another_colour_space_is_not_written() -> None:
    """A CMYK profile does not describe the RGB its photo became; a gray one not the RGBA of gray with alpha."""
    cmyk = io.BytesIO()
    Image.fromarray(smooth_image()).convert("CMYK").save(cmyk, format="JPEG", icc_profile=_profile("sRGB")[:16]
                                                         + b"CMYK" + _profile("sRGB")[20:])
    assert "icc_profile" not in Image.open(io.BytesIO(encode_png(decode(cmyk.getvalue(), LIMITS)))).info
    gray = _profile("sRGB")[:16] + b"GRAY" + _profile("sRGB")[20:]
    pic = decode(png(smooth_image(channels=1)), LIMITS)
    assert Image.open(io.BytesIO(encode_png(replace(pic, icc=gray)))).info["icc_profile"] == gray
    with_alpha = replace(pic, icc=gray, alpha=np.ones(pic.shape, np.float32))  # written as RGBA
    assert "icc_profile" not in Image.open(io.BytesIO(encode_png(with_alpha))).info


@pytest.mark.parametrize("broken", [b"garbage", b"\0" * 200])
def test_a_broken_colour_profile_is_dropped_not_copied(broken: bytes) -> None:
    buf = io.BytesIO()
    Image.fromarray(smooth_image()).save(buf, format="JPEG", icc_profile=broken)
    pic = decode(buf.getvalue(), LIMITS)
    assert pic.icc is None and "icc_profile" not in Image.open(io.BytesIO(encode_png(pic))).info


def test_a_turned_jpeg_with_an_oddly_typed_exif_tag_is_turned_not_refused() -> None:
    """Pillow's exif_transpose rewrote the EXIF and failed on a tag of an unexpected type (here ResolutionUnit
    as text): every turned photo of such a camera was refused as broken."""
    def entry(tag: int, kind: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag, kind, 1 if kind == 3 else len(value)) + value.ljust(4, b"\0")
    ifd = entry(0x0112, 3, b"\x06\0") + entry(0x0128, 2, b"2\0")  # orientation 6; ResolutionUnit as ASCII
    exif = b"Exif\0\0II*\0" + struct.pack("<IH", 8, 2) + ifd + b"\0\0\0\0"
    turned, plain = io.BytesIO(), io.BytesIO()
    Image.fromarray(smooth_image(8, 12)).save(turned, format="JPEG", exif=exif)
    Image.fromarray(smooth_image(8, 12)).save(plain, format="JPEG")
    assert np.array_equal(decode(turned.getvalue(), LIMITS).pixels, np.rot90(decode(plain.getvalue(), LIMITS).pixels, -1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_eight_bit_tiff_is_turned_as_its_tag_says_like_pillow(orientation: int) -> None:
    from PIL import ImageOps
    buf = io.BytesIO()
    Image.fromarray(smooth_image(6, 10)).save(buf, format="TIFF", tiffinfo={0x0112: orientation})
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))), np.float32) / 255
    assert np.array_equal(decode(buf.getvalue(), LIMITS).pixels, expected)


def test_a_colour_profile_over_a_megabyte_reads_back_from_the_png_and_is_left_out_of_its_thumbnail() -> None:
    """Pillow refused a PNG chunk over 1 MB: the PNG written with a large profile could not be read back. A
    thumbnail with it would weigh megabytes."""
    from core.imageio import thumbnail_jpeg
    small = _profile("sRGB")
    big = struct.pack(">I", 1_500_000) + small[4:] + bytes(1_500_000 - len(small))  # as a printer's profile, padded
    buf = io.BytesIO()
    Image.fromarray(smooth_image()).save(buf, format="JPEG", icc_profile=big)
    png_bytes = encode_png(decode(buf.getvalue(), LIMITS))
    assert decode(png_bytes, LIMITS).icc == big
    assert "icc_profile" not in Image.open(io.BytesIO(thumbnail_jpeg(png_bytes, 32))).info


def test_a_32_bit_gray_tiff_is_read_to_its_full_range_and_a_signed_one_refused() -> None:
    """Pillow holds unsigned 32-bit samples as signed: the upper half of the range came out black."""
    import tifffile
    fractions = np.array([[0.1, 0.3, 0.49], [0.51, 0.75, 1.0]])
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.round(fractions * (2**32 - 1)).astype(np.uint32), photometric="minisblack")
    pic = decode(buf.getvalue(), LIMITS)
    assert pic.bit_depth == 16 and np.abs(pic.pixels[..., 0] - fractions).max() < 1e-6
    for signed in (np.int16, np.int8):
        buf = io.BytesIO()
        tifffile.imwrite(buf, np.ones((2, 3), signed), photometric="minisblack")
        with pytest.raises(ImageError, match="TIFF with a sample format or layout that is not supported"):
            decode(buf.getvalue(), LIMITS)


def test_a_raw_dng_is_refused_not_read_as_its_preview() -> None:
    import tifffile

    from core.imageio import probe
    buf = io.BytesIO()
    tifffile.imwrite(buf, smooth_image(16, 24), photometric="rgb", extratags=[(50706, "B", 4, (1, 4, 0, 0), True)])
    for read in (decode, probe):  # refused when submitted too, not only when processed
        with pytest.raises(ImageError, match=r"raw camera files \(DNG\) are not supported"):
            read(buf.getvalue(), LIMITS)


def test_a_photos_exif_is_kept_in_its_png_upright() -> None:
    """Camera, lens and capture time are what a photo library sorts by; the orientation says 1, as the pixels are
    turned already (a viewer would otherwise turn them again)."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Canon"
    exif.get_ifd(0x8769)[0x9003] = "2026:12:04 20:00:00"  # DateTimeOriginal, in the Exif sub-IFD
    exif.get_ifd(0x8769)[0xA002], exif.get_ifd(0x8769)[0xA003] = 12, 8  # PixelXDimension, PixelYDimension
    buf = io.BytesIO()
    Image.fromarray(smooth_image(8, 12)).save(buf, format="JPEG", exif=exif.tobytes())
    pic = decode(buf.getvalue(), LIMITS)
    assert pic.pixels.shape == (12, 8, 3)
    out = Image.open(io.BytesIO(encode_png(pic))).getexif()
    assert out[0x0112] == 1 and out[0x010F] == "Canon" and out.get_ifd(0x8769)[0x9003] == "2026:12:04 20:00:00"
    assert (out.get_ifd(0x8769)[0xA002], out.get_ifd(0x8769)[0xA003]) == (8, 12)  # as turned
    assert np.array_equal(decode(encode_png(pic), LIMITS).pixels, pic.pixels)  # not turned again


def test_the_cameras_thumbnail_of_the_photo_as_it_was_is_not_kept() -> None:
    entry = struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)  # IFD0: orientation 6, then IFD1 at 26: a JPEG thumbnail
    exif = b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + entry + struct.pack("<IH", 26, 1) + \
        struct.pack("<HHIHH", 0x0103, 3, 1, 6, 0) + struct.pack("<I", 0)
    buf = io.BytesIO()
    Image.fromarray(smooth_image(8, 12)).save(buf, format="JPEG", exif=exif)
    from PIL.ExifTags import IFD
    assert Image.open(io.BytesIO(buf.getvalue())).getexif().get_ifd(IFD.IFD1)  # the source has one
    assert not Image.open(io.BytesIO(encode_png(decode(buf.getvalue(), LIMITS)))).getexif().get_ifd(IFD.IFD1)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data", "ignore:Metadata Warning")
@pytest.mark.parametrize("exif", [b"Exif\0\0II*\0\xff\xff\0\0", b"Exif\0\0not a tiff at all",
                                  b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x02\0\x02\0\0\0" + b"6\0\0\0\0\0\0\0",
                                  (b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x03\0\0\0\x1a\0\0\0\0\0\0\0"
                                   b"\x06\0\x06\0\x06\0")])  # three SHORTs stored elsewhere: their offset is no value
def test_exif_that_is_not_well_formed_or_whose_orientation_is_not_a_number_is_dropped(exif: bytes) -> None:
    buf = io.BytesIO()
    Image.fromarray(smooth_image(8, 12)).save(buf, format="JPEG", exif=exif)
    pic = decode(buf.getvalue(), LIMITS)
    assert pic.exif is None and "exif" not in Image.open(io.BytesIO(encode_png(pic))).info


def _cmyk_profile(lab_of: Callable[[int, int, int, int], tuple[float, float, float]], tags: bool = True) -> bytes:
    """A small ICC v2 CMYK printer profile: its A2B0 table maps the 16 corners of CMYK to Lab, lab_of(c, m, y, k)."""
    def s15(*values: float) -> bytes:
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)
    corners = [lab_of(c, m, y, k) for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1)]
    clut = b"".join(struct.pack(">HHH", round(L / 100 * 0xFF00), round((a + 128) * 256), round((b + 128) * 256))
                    for L, a, b in corners)  # v2 16-bit Lab
    ramp = struct.pack(">HH", 0, 65535)
    lut = b"mft2\0\0\0\0" + bytes([4, 3, 2, 0]) + s15(1, 0, 0, 0, 1, 0, 0, 0, 1) + struct.pack(">HH", 2, 2) + \
        ramp * 4 + clut + ramp * 3
    desc = b"desc\0\0\0\0" + struct.pack(">I", 5) + b"test\0" + bytes(82)
    body = [(b"desc", desc), (b"wtpt", b"XYZ \0\0\0\0" + s15(0.9642, 1.0, 0.8249)), (b"A2B0", lut if tags else desc)]
    offset, table, data = 128 + 4 + 12 * len(body), b"", b""
    for signature, tag in body:
        tag += bytes(-len(tag) % 4)
        table, data = table + signature + struct.pack(">II", offset + len(data), len(tag)), data + tag
    header = struct.pack(">I", offset + len(data)) + b"lcms" + struct.pack(">I", 0x02100000) + b"prtrCMYKLab " + \
        bytes(12) + b"acsp" + bytes(28) + s15(0.9642, 1.0, 0.8249) + bytes(48)
    return header + struct.pack(">I", len(body)) + table + data


def test_a_cmyk_photo_is_made_rgb_through_its_own_profile() -> None:
    from PIL import ImageCms
    icc = _cmyk_profile(lambda c, m, y, k: (95 * (1 - k) * (1 - 0.4 * c), -45 * c, -35 * c))  # a cyan ink's
    cmyk = Image.new("CMYK", (4, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (128, 0, 0, 0), (0, 0, 0, 128)])
    managed = ImageCms.profileToProfile(cmyk, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
                                        outputMode="RGB")
    for profile, expected in ((icc, managed), (_cmyk_profile(lambda *_: (50, 0, 0), tags=False), cmyk.convert("RGB"))):
        buf = io.BytesIO()
        cmyk.save(buf, format="TIFF", icc_profile=profile)  # lossless, so the colours compare exactly
        pic = decode(buf.getvalue(), LIMITS)  # a profile LittleCMS cannot use: Pillow's formula, not a failure
        assert np.array_equal(np.round(pic.pixels * 255), np.asarray(expected, np.float32))
    assert not np.array_equal(np.asarray(managed), np.asarray(cmyk.convert("RGB")))


def test_a_png_whose_metadata_has_a_bad_checksum_is_read_as_browsers_show_it() -> None:
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "scanned 1998")
    buf = io.BytesIO()
    Image.fromarray(smooth_image()).save(buf, format="PNG", pnginfo=info)
    data = bytearray(buf.getvalue())
    at = data.index(b"tEXt")
    data[at + 4 + struct.unpack(">I", data[at - 4:at])[0]] ^= 1  # a bit of its checksum flipped: Pillow refused it
    assert np.array_equal(decode(bytes(data), LIMITS).pixels, decode(buf.getvalue(), LIMITS).pixels)


@pytest.mark.parametrize("fmt, note", [("GIF", "an animated GIF of 3 frames: only the first frame was processed"),
                                       ("PNG", "an animated PNG of 3 frames: only the first frame was processed"),
                                       ("WEBP", "an animated WEBP of 3 frames: only the first frame was processed"),
                                       ("AVIF", "an animated AVIF of 3 frames: only the first frame was processed"),
                                       ("TIFF", ("a TIFF of 3 pages: only the first page was processed (`denocap "
                                                "pages` splits it into a file a page)"))])
def test_a_file_of_many_pictures_is_read_by_its_first_with_a_note_that_says_so(fmt: str, note: str) -> None:
    picture = decode(many_frames(fmt), LIMITS)
    first = Image.open(io.BytesIO(many_frames(fmt))).convert("RGB")
    np.testing.assert_allclose(picture.pixels, np.asarray(first, np.float32) / 255)
    assert picture.notes == (note,)
    assert decode(png(smooth_image()), LIMITS).notes == ()


def test_a_tiff_page_with_its_thumbnail_or_a_phones_jpeg_with_its_preview_is_one_picture() -> None:
    import tifffile
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(smooth_image(64, 80), photometric="rgb")
        tif.write(smooth_image(16, 20), photometric="rgb", subfiletype=1)  # a reduced-size copy
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    assert decode(buf.getvalue(), LIMITS).notes == ()
    mpo = io.BytesIO()
    Image.fromarray(smooth_image(64, 80)).save(mpo, format="MPO", save_all=True,
                                               append_images=[Image.fromarray(smooth_image(16, 20))])
    assert Image.open(io.BytesIO(mpo.getvalue())).n_frames == 2
    assert decode(mpo.getvalue(), LIMITS).notes == ()


def tiff_of_pages(pages: int, thumbnails: bool = False) -> bytes:
    """A TIFF of `pages` 1x1 gray pages, each a 66-byte IFD (10 MB holds 160,000 of them); with `thumbnails`, each
    page followed by a reduced-size copy (NewSubfileType 1), every IFD 78 bytes."""
    entries = [(256, 3, 1, 1), (257, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8), (279, 4, 1, 1)]  # width, height,
    # photometric, the strip's offset and length
    kinds = [[(254, 4, 1, 0)], [(254, 4, 1, 1)]] * pages if thumbnails else [[]] * pages
    size = 2 + 12 * (len(entries) + thumbnails) + 4
    out = bytearray(b"II*\0" + struct.pack("<I", 12) + b"\x80\0\0\0")
    for n, kind in enumerate(kinds):
        following = 12 + (n + 1) * size if n < len(kinds) - 1 else 0
        out += (struct.pack("<H", len(kind + entries)) + b"".join(struct.pack("<HHII", *e) for e in kind + entries)
                + struct.pack("<I", following))
    return bytes(out)


def test_the_pages_of_a_tiff_are_counted_up_to_a_bound() -> None:
    """Pillow walks a TIFF's pages in quadratic time: 160,000 pages took 161 s to count."""
    assert decode(tiff_of_pages(2), LIMITS).notes[0].startswith("a TIFF of 2 pages")
    assert decode(tiff_of_pages(5000), LIMITS).notes[0].startswith("a TIFF of more than 1,000 pages")
    assert decode(tiff_of_pages(1000), LIMITS).notes[0].startswith("a TIFF of 1,000 pages")
    assert full_pages(tiff_of_pages(1000, thumbnails=True), LIMITS) == (list(range(0, 2000, 2)), "all")  # not "capped"
    assert full_pages(tiff_of_pages(1001, thumbnails=True), LIMITS)[1] == "capped"


def test_a_tiff_whose_later_pages_are_cut_off_says_so() -> None:
    three = tiff_of_pages(3)
    assert decode(three[:12 + 66 + 4], LIMITS).notes[0].startswith("a TIFF whose later pages could not be read: only")
    assert decode(three[:12 + 2 * 66 + 4], LIMITS).notes[0].startswith(
        "a TIFF of 2 readable pages and more that could not be read: only the first page was processed")
    assert decode(tiff_of_pages(1), LIMITS).notes == ()


def test_a_time_limit_while_counting_pages_reaches_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's soft time limit is an Exception; run_item finds it as the ImageError's context."""
    from PIL import TiffImagePlugin

    class TimeLimit(Exception):
        pass

    def seek(self: Image.Image, frame: int) -> None:
        raise TimeLimit
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "seek", seek)
    with pytest.raises(ImageError) as raised:
        decode(many_frames("TIFF"), LIMITS)
    assert isinstance(raised.value.__context__, TimeLimit)


def test_a_scans_resolution_is_kept_in_its_png_turned_with_it() -> None:
    """A 600 dpi scan written without its resolution prints at 72 dpi: eight times too large."""
    def png_dpi(data: bytes) -> tuple[float, float] | None:
        return Image.open(io.BytesIO(encode_png(decode(data, LIMITS)))).info.get("dpi")
    jpeg, tiff, odd = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.fromarray(smooth_image(6, 10)).save(jpeg, format="JPEG", dpi=(300, 300))
    Image.fromarray(smooth_image(6, 10)).save(tiff, format="TIFF", dpi=(600, 300), tiffinfo={0x0112: 6})
    Image.fromarray(smooth_image(6, 10)).save(odd, format="TIFF", dpi=(1e9, 300))
    deep_png = encode_png(replace(decode(png(smooth_image(6, 10)), LIMITS), bit_depth=16, dpi=(1200.0, 1200.0)))
    # a 16-bit colour PNG: OpenCV reads its pixels, Pillow its pHYs
    assert png_dpi(jpeg.getvalue()) == pytest.approx((300, 300), abs=0.01)
    assert png_dpi(tiff.getvalue()) == pytest.approx((300, 600), abs=0.01)  # a quarter turn: x is the old y
    assert decode(tiff.getvalue(), LIMITS).pixels.shape[:2] == (10, 6)
    assert png_dpi(deep_png) == pytest.approx((1200, 1200), abs=0.03) and decode(deep_png, LIMITS).bit_depth == 16
    assert png_dpi(odd.getvalue()) is None and png_dpi(png(smooth_image())) is None
    exif = Image.Exif()
    exif[0x0112] = 9  # no orientation EXIF names: neither the pixels nor the resolution are turned
    Image.fromarray(smooth_image(6, 10)).save(jpeg := io.BytesIO(), format="JPEG", dpi=(300, 72), exif=exif.tobytes())
    assert png_dpi(jpeg.getvalue()) == pytest.approx((300, 72), abs=0.01)


def png_with_chunks(pixels: np.ndarray, chunks: dict[bytes, bytes]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for kind, body in chunks.items():
        info.add(kind, body)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@pytest.mark.parametrize("depth", [8, 16])
def test_a_pngs_gamma_and_chromaticity_are_kept_in_its_png(depth: int) -> None:
    """An old scanner's PNG may say its colour space by gAMA and cHRM alone; without them a viewer shows the
    denoised PNG darker or lighter than the upload."""
    white_and_primaries = (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    chunks = {b"gAMA": struct.pack(">I", 55556), b"cHRM": struct.pack(">8I", *white_and_primaries)}
    picture = replace(decode(png_with_chunks(smooth_image(6, 10), chunks), LIMITS), bit_depth=depth)
    out = Image.open(io.BytesIO(encode_png(picture)))
    assert out.info["gamma"] == 0.55556
    assert out.info["chromaticity"] == pytest.approx(tuple(v / 100_000 for v in white_and_primaries))
    assert decode(encode_png(picture), LIMITS).gamma == 0.55556
    broken = decode(png_with_chunks(smooth_image(6, 10), {b"gAMA": struct.pack(">I", 0),
                                                          b"cHRM": struct.pack(">8I", *[200_000] * 8)}), LIMITS)
    assert broken.gamma is None and broken.chromaticity is None  # dropped, not copied
    assert "gamma" not in Image.open(io.BytesIO(encode_png(decode(png(smooth_image()), LIMITS)))).info


XMP = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
       'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
       'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" tiff:Orientation="6" '
       'tiff:ImageWidth="10" tiff:ImageLength="6" '
       'xmp:Rating="4"><dc:subject><rdf:Bag><rdf:li>harbour</rdf:li><rdf:li>Großvater</rdf:li></rdf:Bag></dc:subject>'
       '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF", "WEBP"])
def test_a_photos_xmp_keywords_and_rating_are_kept_upright(fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(smooth_image(6, 10)).save(buf, format=fmt, **({"tiffinfo": {700: XMP}} if fmt == "TIFF" else
                                                                  {"xmp": XMP, "lossless": True}))
    picture = decode(buf.getvalue(), LIMITS)
    assert picture.pixels.shape[:2] == (10, 6)  # turned by the XMP orientation where there is no EXIF one
    out = Image.open(io.BytesIO(encode_png(picture)))
    xmp = out.info["xmp"]
    assert b'xmp:Rating="4"' in xmp and "Großvater".encode() in xmp and b'tiff:Orientation="6"' not in xmp
    # (1, or left out: Pillow drops it from a TIFF's XMP as it turns the pixels)
    assert b'tiff:ImageWidth="6" tiff:ImageLength="10"' in xmp  # turned a quarter, as the pixels
    assert out.getexif().get(0x0112, 1) == 1  # a viewer does not turn it again
    assert decode(encode_png(picture), LIMITS).pixels.shape == picture.pixels.shape


def test_xmp_that_is_not_utf8_is_dropped_not_copied() -> None:
    buf = io.BytesIO()
    Image.fromarray(smooth_image(6, 10)).save(buf, format="JPEG", xmp=XMP.replace("ß".encode(), b"\xdf"))
    assert decode(buf.getvalue(), LIMITS).xmp is None


def test_a_scans_tiff_tags_are_kept_as_the_pngs_exif() -> None:
    """A TIFF keeps its EXIF among its own tags, not in an EXIF block: a scanner's make and model, the date, rights."""
    tags = Image.Exif()
    tags.update({271: "Nikon", 272: "LS-5000", 306: "2001:02:03 04:05:06", 33432: "(c) Ann", 0x0112: 6})
    buf = io.BytesIO()
    Image.fromarray(smooth_image(6, 10)).save(buf, format="TIFF", exif=tags)
    picture = decode(buf.getvalue(), LIMITS)
    out = Image.open(io.BytesIO(encode_png(picture))).getexif()
    assert {t: out.get(t) for t in (271, 272, 306, 33432)} == {271: "Nikon", 272: "LS-5000", 306: "2001:02:03 04:05:06",
                                                               33432: "(c) Ann"}
    assert picture.pixels.shape[:2] == (10, 6) and out.get(0x0112, 1) == 1  # turned once, not again by a viewer
    assert decode(png(smooth_image()), LIMITS).exif is None


def test_a_tiff_tag_of_an_odd_type_or_size_is_left_out_not_a_reason_to_refuse() -> None:
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, smooth_image(6, 10), photometric="rgb", metadata=None,  # no description of its own
                     extratags=[(33432, 5, 1, (1, 3)), (271, 2, 0, "x" * 100_000), (270, 2, 0, "d" * 30_000),
                                (272, 2, 0, "LS-5000"), (315, 2, 0, "a" * 5_000)])
    # copyright as a fraction, a make of 100 KB, a description of 30 KB that no longer fits after the artist, a model
    kept = Image.open(io.BytesIO(encode_png(decode(buf.getvalue(), LIMITS)))).getexif()
    assert 33432 not in kept and 271 not in kept and 270 not in kept
    assert kept[272] == "LS-5000" and kept[315] == "a" * 5_000


def test_a_tiff_tags_text_keeps_its_bytes() -> None:
    """Pillow reads a TIFF's text as Latin-1 and would write it back as ASCII: a UTF-8 © became '??'."""
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, smooth_image(6, 10), photometric="rgb",
                     extratags=[(33432, 2, 0, "© 2024 Jürgen".encode())])
    assert "© 2024 Jürgen".encode() in (decode(buf.getvalue(), LIMITS).exif or b"")


def test_a_tiff_without_resolution_tags_gets_none_not_one_dpi() -> None:
    """Pillow reads 1 dpi for such a TIFF (its own and OpenCV's are written so): a scan 6,000 inches wide."""
    buf = io.BytesIO()
    Image.fromarray(smooth_image(6, 10)).save(buf, format="TIFF")
    assert Image.open(io.BytesIO(buf.getvalue())).info.get("dpi") == (1, 1)
    assert decode(buf.getvalue(), LIMITS).dpi is None


def test_a_sixteen_bit_tiff_turned_by_its_xmp_alone_is_turned_like_an_eight_bit_one() -> None:
    """OpenCV turns a TIFF by its orientation tag, not by its XMP, which Pillow honours for the eight-bit one."""
    import tifffile
    pixels = (smooth_image(4, 6).astype(np.uint16) * 257)
    eight, deep = io.BytesIO(), io.BytesIO()
    Image.fromarray(smooth_image(4, 6)).save(eight, format="TIFF", tiffinfo={700: XMP})
    tifffile.imwrite(deep, pixels, photometric="rgb", extratags=[(700, 1, len(XMP), XMP)])
    turned = decode(deep.getvalue(), LIMITS)
    assert turned.bit_depth == 16 and turned.pixels.shape[:2] == decode(eight.getvalue(), LIMITS).pixels.shape[:2] == (6, 4)


@pytest.mark.parametrize("written, upright", [(b'tiff:Orientation="6"', b'tiff:Orientation="1"'),
                                              (b"<tiff:Orientation>8</tiff:Orientation>",
                                               b"<tiff:Orientation>1</tiff:Orientation>"),
                                              (b'tiff:Orientation="6 "', b'tiff:Orientation="1 "')])
def test_the_xmp_orientation_pillow_reads_is_the_one_set_upright(written: bytes, upright: bytes) -> None:
    """Pillow turns by the first digit after '="' or '>'; the output must not be turned by a viewer again."""
    buf = io.BytesIO()
    Image.fromarray(smooth_image(4, 6)).save(buf, format="JPEG", xmp=XMP.replace(b'tiff:Orientation="6"', written))
    picture = decode(buf.getvalue(), LIMITS)
    assert picture.pixels.shape[:2] == (6, 4) and picture.xmp is not None and upright in picture.xmp
    assert Image.open(io.BytesIO(encode_png(picture))).getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("depth", [8, 16])  # pages of one layout: Pillow cannot move from an interleaved page to a
# planar one (IndexError), and such a file is still read by its thumbnail
def test_a_tiff_whose_first_page_is_its_thumbnail_is_read_by_its_full_size_page(depth: int) -> None:
    import tifffile
    full = smooth_image(64, 80).astype(np.uint16) * 257 if depth == 16 else smooth_image(64, 80)
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(full[::4, ::4], photometric="rgb", subfiletype=1)  # the reduced-size copy, first
        tif.write(full, photometric="rgb")
    picture = decode(buf.getvalue(), LIMITS)
    assert picture.bit_depth == depth and picture.notes == ()
    np.testing.assert_allclose(picture.pixels, full.astype(np.float32) / (65535 if depth == 16 else 255))


def test_the_full_size_page_keeps_its_own_profile_and_resolution_not_the_thumbnails() -> None:
    """Pillow keeps the thumbnail's profile and resolution in `info` when the page it moves to has none."""
    import tifffile
    from PIL import ImageCms
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(smooth_image(16, 20), photometric="rgb", subfiletype=1, resolution=(300, 300), resolutionunit="INCH",
                  iccprofile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        tif.write(smooth_image(64, 80), photometric="rgb", metadata=None)
    picture = decode(buf.getvalue(), LIMITS)
    assert picture.pixels.shape == (64, 80, 3) and picture.icc is None and picture.dpi is None


def test_the_full_size_page_is_decoded_alone(tmp_path: Path) -> None:
    """OpenCV decoded every page to keep one: four compressed 4000x4000 16-bit pages after the photo (200 KB of
    file) took 400 MB."""
    import subprocess
    import sys

    import tifffile
    full = smooth_image(64, 80).astype(np.uint16) * 257
    with tifffile.TiffWriter(tmp_path / "scan.tif") as tif:
        tif.write(full[::4, ::4], photometric="rgb", subfiletype=1)
        tif.write(full, photometric="rgb")
        for _ in range(4):
            tif.write(np.zeros((4000, 4000, 3), np.uint16), photometric="rgb", compression="zlib")
    decode_it = ("import sys; from core.imageio import Limits, decode; "
                 "print(decode(open(sys.argv[1], 'rb').read(), Limits(10**8, 10**8, 10**5)).pixels.shape)")
    measured = ("import resource, subprocess, sys; out = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                "print(out.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # a child of a
    # small process: one of this one would inherit its high-water mark
    out = subprocess.run([sys.executable, "-c", measured, sys.executable, "-c", decode_it, str(tmp_path / "scan.tif")],
                         capture_output=True, text=True, check=True, timeout=120).stdout.rsplit(" ", 1)
    assert out[0] == "(64, 80, 3)" and int(out[1]) < 300 * 1024, out  # KiB


def test_an_animated_png_whose_still_image_is_not_a_frame_says_the_still_was_processed() -> None:
    first, *rest = (Image.fromarray(smooth_image(8, 8, seed=seed)) for seed in range(3))
    buf = io.BytesIO()
    first.save(buf, format="PNG", save_all=True, append_images=rest, default_image=True)  # the still, then 2 frames
    picture = decode(buf.getvalue(), LIMITS)
    assert picture.notes == ("an animated PNG of 2 frames: its still image was processed, not the animation",)
    np.testing.assert_allclose(picture.pixels, np.asarray(first, np.float32) / 255)


def test_each_full_size_page_of_a_tiff_is_read_by_its_number() -> None:
    import tifffile

    shots = [smooth_image(64, 80, seed=seed) for seed in range(3)]
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(shots[0], photometric="rgb")
        tif.write(shots[0][::4, ::4], photometric="rgb", subfiletype=1)  # the first page's thumbnail
        tif.write(shots[1], photometric="rgb")
        tif.write(shots[2], photometric="rgb")
    assert full_pages(buf.getvalue(), LIMITS) == ([0, 2, 3], "all") and full_pages(png(shots[0]), LIMITS) == ([0], "all")
    assert full_pages(tiff_of_pages(5)[:12 + 3 * 66 + 4], LIMITS) == ([0, 1, 2], "broken")
    deep = np.random.default_rng(0).integers(0, 65535, (20, 30, 3), dtype=np.uint16)
    mixed = io.BytesIO()
    with tifffile.TiffWriter(mixed) as tif:  # OpenCV cannot read the first page: it reads it too, for the second
        tif.write(np.zeros((8, 8, 5), np.uint8), photometric="rgb", extrasamples=[2, 0])
        tif.write(deep, photometric="rgb")
    np.testing.assert_allclose(decode(mixed.getvalue(), LIMITS, 1).pixels, deep / 65535, atol=1e-7)
    with pytest.raises(ImageError, match="^broken 16-bit colour image$"):  # cut: OpenCV's reason, not tifffile's advice
        decode(mixed.getvalue()[:-100], LIMITS, 1)
    with pytest.raises(ImageError, match=r"^not an image \(unknown format\)$"):
        decode(b"MM*\0" + b"junk" * 10, LIMITS)  # starts as such a TIFF, and is none
    odd = b"II\0*" + many_frames("TIFF", 2)[4:]  # a byte order mixed up in its header, which Pillow reads
    assert full_pages_file(io.BytesIO(odd), len(odd), LIMITS) == full_pages(odd, LIMITS) == ([0, 1], "all")
    for page, shot in zip([0, 2, 3], shots, strict=True):
        picture = decode(buf.getvalue(), LIMITS, page)
        np.testing.assert_allclose(picture.pixels, shot.astype(np.float32) / 255)
        assert picture.notes == ()


def test_a_tiff_of_thumbnails_alone_is_read_by_its_first() -> None:
    import tifffile
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(smooth_image(10, 12), photometric="rgb", subfiletype=1)
        tif.write(smooth_image(20, 24), photometric="rgb", subfiletype=1)
    assert decode(buf.getvalue(), LIMITS).pixels.shape == (10, 12, 3)
