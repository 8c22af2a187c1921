"""Safe image decoding and PNG encoding. Every failure a user can cause raises ImageError with a reason."""
import io
import math
import numbers
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False
PROFILE_MOST = 16 * 1024**2  # bytes of a colour profile kept; a printer's can pass Pillow's 1 MB for a PNG chunk
PngImagePlugin.MAX_TEXT_CHUNK = PROFILE_MOST  # so a PNG with one (its own output, a user's) reads back
ANIMATED = ("GIF", "PNG", "WEBP", "AVIF")  # formats whose frames Pillow counts from the header (GIF: a quick walk)
FRAMES_COUNTED = 1000  # a multi-page TIFF's pages counted, at most, for the note that only the first was processed
DECODER_ERRORS = (OSError, ValueError, SyntaxError, struct.error, KeyError, IndexError, TypeError)  # what Pillow
# raises on bad bytes; not a time limit, which must reach the worker
EXIF_MOST = 65_527  # what one JPEG APP1 segment holds
DPI_MOST = 1_000_000  # a microscope's or a film scanner's is high; beyond this a resolution is not believed
XMP_MOST = 4 * 1024**2  # a library's packet with its edit history is some 100 KB
XMP_ORIENTATION = re.compile(rb'(tiff:Orientation(?:="|>))[0-9]')  # as Pillow reads it, attribute or element
XMP_DIMENSIONS = ((b"tiff:ImageWidth", b"tiff:ImageLength"), (b"exif:PixelXDimension", b"exif:PixelYDimension"))
THUMBNAIL_PROFILE_MOST = 65_519  # one JPEG APP2 segment: a phone's profile is a few KB, a thumbnail stays small
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".avif", ".gif", ".ppm",
                  ".pgm", ".pbm", ".pnm"}  # what a folder contributes
# what Pillow may read: its other readers are not for photos, and some decode on open (ICO's PNG, past our limits)
FORMATS = ["PNG", "JPEG", "TIFF", "WEBP", "AVIF", "BMP", "GIF", "PPM"]


class ImageError(ValueError):
    """The bytes are not an image this service accepts; the message says why."""
    kind = "bad_image"  # the failure's kind, for metrics


class TooLarge(ImageError):
    """Over a size limit from the settings (bytes, pixels, side) or a decompression bomb."""
    kind = "too_large"


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    max_side: int


@dataclass(frozen=True)
class Picture:
    pixels: np.ndarray  # (H, W, C) float32 in [0, 1], C = 1 (gray) or 3 (RGB)
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], kept untouched through the pipeline
    bit_depth: int  # 8 or 16, the depth the PNG output is written in
    icc: bytes | None = None  # the source's colour profile (a phone's Display P3, Adobe RGB), written into its PNGs
    exif: bytes | None = None  # the source's EXIF (camera, capture time), orientation 1, written into its PNGs
    notes: tuple[str, ...] = ()  # what the user is told of how it was read or made (only a file's first page)
    dpi: tuple[float, float] | None = None  # the source's resolution (a 600 dpi scan prints at its size), x and y
    xmp: bytes | None = None  # the source's XMP (a photo library's keywords, rating, title), orientation 1
    gamma: float | None = None  # a PNG's gAMA: the encoding gamma that a viewer undoes where there is no profile
    chromaticity: tuple[float, ...] | None = None  # a PNG's cHRM: white point and primaries, x and y of each

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def decode(data: bytes, limits: Limits, page: int | None = None) -> Picture:
    """The picture a file holds: a TIFF's first full-size page, with a note when it has more pages or frames than
    that one; or with `page` (one of full_pages), that page of a TIFF, without the note."""
    with _reasons():
        img = _open(data, limits)
        whole = page is None
        if whole and _reduced(img):  # a writer may put the thumbnail first
            page = next(iter(_walk_pages(img, 1)[0]), 0)
        if page is not None:  # asked for, or found by the walk: opened anew at it
            img = _at_page(data, limits, page)
        page = page or 0
        icc = _profile(img.info.get("icc_profile"))
        turned = _orientation(img) >= 5  # a quarter turn; read before the pixels: Pillow and OpenCV turn a TIFF by
        # its tag themselves
        dpi = _dpi(img, turned)
        picture, orientation = _pixels(img, data, icc, page)
        exif = img.info.get("exif") or (_tiff_exif(img) if img.format == "TIFF" else None)
        picture = replace(picture, icc=icc, exif=_upright_exif(exif), dpi=dpi,
                          xmp=_upright_xmp(img.info.get("xmp"), turned), **_png_colour(img.info))
        notes = _first_only(img) if whole or img.format != "TIFF" else ()  # last: it moves to other frames; an
        # animation asked for its first frame still says it has more
        return _upright(replace(picture, notes=notes), orientation)


def _first_only(img: Image.Image) -> tuple[str, ...]:
    """A note when the file holds more pictures than the first, which is the one read: an animation's frames, a
    multi-page TIFF's full-size pages (not its reduced-size ones, thumbnails). A phone's JPEG that carries a second,
    smaller picture (Pillow's MPO) is one photo. A TIFF's pages are counted up to FRAMES_COUNTED (Pillow walks them
    in quadratic time)."""
    if img.format == "TIFF":
        pages, ended = _walk_pages(img)
        return _tiff_note(len(pages), ended)
    try:
        frames = getattr(img, "n_frames", 1) if img.format in ANIMATED else 1  # from its header, or a walk (GIF)
    except DECODER_ERRORS:  # a broken later frame of a file whose first one decoded
        return (f"an animated {img.format} whose later frames could not be read: only the first frame was processed",)
    if frames > 1 and img.format == "PNG" and img.info.get("default_image"):  # a still for viewers without APNG
        animated = f"{frames - 1:,} frame{'s' if frames > 2 else ''}"
        return (f"an animated PNG of {animated}: its still image was processed, not the animation",)
    return (f"an animated {img.format} of {frames:,} frames: only the first frame was processed",) if frames > 1 else ()


def _walk_pages(img: Image.Image, most: int = FRAMES_COUNTED) -> tuple[list[int], str]:
    """A TIFF's full-size pages (not its reduced-size copies), at most `most`, and whether that is "all" of them, the
    walk stopped at a "broken" entry, or it was "capped" (Pillow walks pages in quadratic time)."""
    found: list[int] = []
    for page in range(2 * FRAMES_COUNTED + 1):  # pages and their thumbnails, and the end after them
        try:
            img.seek(page)
        except EOFError:  # no more pages
            return found, "all"
        except DECODER_ERRORS:  # an entry there, but broken: a page or a thumbnail
            return found, "broken"
        if not _reduced(img):
            if len(found) == most:
                return found, "capped"
            found.append(page)
    return found, "capped"


def _tiff_note(pages: int, ended: str) -> tuple[str, ...]:
    what = {"all": f"a TIFF of {pages:,} pages", "capped": f"a TIFF of more than {pages:,} pages",
            "broken": f"a TIFF of {pages:,} readable pages and more that could not be read" if pages > 1 else
                      "a TIFF whose later pages could not be read"}[ended]
    if pages < 2 and ended != "broken":
        return ()
    return (f"{what}: only the first page was processed (`denocap pages` splits it into a file a page)",)


def _dpi(img: Image.Image, turned: bool) -> tuple[float, float] | None:
    """Pillow's reading of the file's resolution (JFIF or EXIF of a JPEG, a TIFF's tags, a PNG's pHYs), if the file
    gives one and it is sane, x and y swapped when the photo is turned a quarter. Pillow says 1 dpi for a TIFF
    without resolution tags (Pillow's and OpenCV's own), which no scan has."""
    dpi = img.info.get("dpi")
    if not isinstance(dpi, tuple) or len(dpi) != 2 or img.format == "TIFF" and X_RESOLUTION not in img.tag_v2:
        return None
    x, y = (float(v) if isinstance(v, numbers.Real) else 0.0 for v in dpi)  # a TIFF's are IFDRational
    if not (1 < x <= DPI_MOST and 1 < y <= DPI_MOST):
        return None
    return (y, x) if turned else (x, y)


def _png_colour(info: dict) -> dict[str, float | tuple[float, ...] | None]:
    """A PNG's gAMA and cHRM as Pillow reads them, where sane: an old scanner's PNG says its colour space by them
    alone, and its denoised PNG without them looks darker or lighter than the upload."""
    gamma, chromaticity = info.get("gamma"), info.get("chromaticity")
    sane_gamma = isinstance(gamma, float) and 0 < gamma < 20
    sane_chromaticity = (isinstance(chromaticity, tuple) and len(chromaticity) == 8
                         and all(isinstance(v, float) and 0 <= v <= 1 for v in chromaticity))
    return {"gamma": gamma if sane_gamma else None, "chromaticity": chromaticity if sane_chromaticity else None}


def _profile(icc: bytes | None) -> bytes | None:
    """An ICC profile that says its own length and carries the signature; broken ones are dropped, not copied."""
    valid = (icc is not None and 132 <= len(icc) <= PROFILE_MOST and int.from_bytes(icc[:4]) == len(icc)
             and icc[36:40] == b"acsp")
    return icc if valid else None


def _upright_exif(exif: bytes | None) -> bytes | None:
    """The photo's EXIF (camera, lens, capture time: what a photo library sorts by) as a PNG's eXIf chunk holds it,
    its orientation set to 1, as the pixels are turned already, and without its thumbnail (IFD1: the photo as it was
    before denoising, in the old orientation); None if there is none or it is not well formed."""
    tiff = (exif or b"").removeprefix(b"Exif\0\0")
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(tiff[:4])
    if order is None or len(tiff) > EXIF_MOST:
        return None
    out, turned, sub = bytearray(tiff), False, 0
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, values = struct.unpack_from(order + "HHI", tiff, entry)
            if tag == ORIENTATION:
                if (kind, values) != (3, 1):  # not one SHORT: no safe way to say "upright"
                    return None
                turned = struct.unpack_from(order + "H", tiff, entry + 8)[0] in (5, 6, 7, 8)  # a quarter turn
                struct.pack_into(order + "H", out, entry + 8, 1)
            elif tag == EXIF_IFD:
                sub = struct.unpack_from(order + "I", tiff, entry + 8)[0]
        struct.pack_into(order + "I", out, ifd + 2 + 12 * count, 0)  # no next IFD
        if turned and sub:
            _swap_dimensions(tiff, out, order, sub)
    except struct.error:  # offsets past the end
        return None
    return bytes(out)


def _tiff_exif(img: Image.Image) -> bytes | None:
    """A TIFF holds its EXIF among its own tags: the descriptive ones (a scanner's or camera's make and model, the
    date, artist, rights) as the EXIF a JPEG would carry, their bytes as the file has them (a UTF-8 ©); None if it
    has none. Only text, and within EXIF_MOST: a tag of another type or size, which Pillow may fail to write, is left
    out. Not the Exif and GPS directories, whose values Pillow would read whole, however large, nor the
    orientation: the pixels are turned by it already."""
    tags, exif, room = img.getexif(), Image.Exif(), EXIF_MOST // 2
    for tag in DESCRIPTIVE_TAGS:
        if isinstance(value := tags.get(tag), str) and len(value) < room:
            exif[tag] = value.encode("latin-1", "replace")  # Pillow read the bytes as Latin-1
            room -= len(value)
    return exif.tobytes() if len(exif) else None


def _upright_xmp(xmp: object, turned: bool) -> bytes | None:
    """The photo's XMP packet (what Lightroom and its kind keep: keywords, rating, title, rights), its orientation
    set to 1 as EXIF's, and after a quarter turn its width and height swapped, as EXIF's; None if there is none, it
    is over XMP_MOST or not UTF-8, as XMP must be."""
    if not isinstance(xmp, bytes) or not xmp or len(xmp) > XMP_MOST:
        return None
    try:
        xmp.decode()
    except UnicodeDecodeError:
        return None
    for width, height in XMP_DIMENSIONS if turned else ():
        found = [re.search(rb"(" + name + rb'(?:="|>))(\d+)', xmp) for name in (width, height)]
        if found[0] and found[1]:
            (w, w_at), (h, h_at) = ((m.group(2), m.span(2)) for m in found)
            for (start, end), value in sorted([(w_at, h), (h_at, w)], reverse=True):  # the later one first
                xmp = xmp[:start] + value + xmp[end:]
    return XMP_ORIENTATION.sub(rb"\g<1>1", xmp)


def _swap_dimensions(tiff: bytes, out: bytearray, order: str, ifd: int) -> None:
    """The Exif IFD's PixelXDimension and PixelYDimension swapped in `out`: the photo was turned a quarter."""
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    entries = {struct.unpack_from(order + "H", tiff, e)[0]: e for e in range(ifd + 2, ifd + 2 + 12 * count, 12)}
    if PIXEL_X in entries and PIXEL_Y in entries:
        x, y = entries[PIXEL_X], entries[PIXEL_Y]
        out[x + 2:x + 12], out[y + 2:y + 12] = tiff[y + 2:y + 12], tiff[x + 2:x + 12]  # type, count and value


def full_pages(data: bytes, limits: Limits) -> tuple[list[int], str]:
    """The pages of a TIFF that are not reduced-size copies (thumbnails), at most FRAMES_COUNTED, as decode's
    `page` (a document feeder's scans, one a page), and how the walk ended ("all", "broken", "capped"); [0] and
    "all" for any other file."""
    return _full_pages(io.BytesIO(data), len(data), limits)


def full_pages_file(file: BinaryIO, size: int, limits: Limits) -> tuple[list[int], str]:
    """full_pages() of a file of `size` bytes that passed probe_file, read page header by page header, never whole;
    a file that is not a TIFF is not opened again."""
    file.seek(0)
    if file.read(4) not in TiffImagePlugin.PREFIXES:  # what Pillow reads as a TIFF, odd byte orders too
        return [0], "all"
    return _full_pages(file, size, limits)


def _full_pages(file: BinaryIO, size: int, limits: Limits) -> tuple[list[int], str]:
    file.seek(0)
    with _reasons():
        img = _open_stream(file, size, limits)
        return _walk_pages(img) if img.format == "TIFF" else ([0], "all")


def _reduced(img: Image.Image) -> bool:
    """A TIFF page that is a reduced-size copy of another (a writer may put the thumbnail first)."""
    return img.format == "TIFF" and bool(img.tag_v2.get(NEW_SUBFILE_TYPE, 0) & 1)


def _at_page(data: bytes, limits: Limits, page: int) -> Image.Image:
    """The TIFF opened anew at that page, its size checked as the header's was. Anew, as Pillow sets a page's
    profile and resolution only where the page has them, keeping the earlier page's otherwise."""
    img = _open(data, limits)
    if page:  # seek(0) on a fresh image is no move, and would not set the keys again
        for key in PAGE_INFO:
            img.info.pop(key, None)
        img.seek(page)
        _check_size(img.size, limits)
    return img


def _pixels(img: Image.Image, data: bytes, icc: bytes | None, page: int) -> tuple[Picture, int]:
    """The pixels and alpha as stored, in the depth stored, and the EXIF orientation that turns them upright."""
    if _is_deep(img, data):
        if img.format == "PPM":
            return _rgb16(_ppm16(data, img), False), 1
        if img.format != "TIFF":
            deep = _opencv16(data)
            deep = deep[..., [0, 3]] if data[25] == 4 else deep  # gray and alpha, which OpenCV made RGBA
            return _rgb16(deep, False), _orientation(img)
        premultiplied = img.tag_v2.get(EXTRA_SAMPLES) in (1, (1,))
        keep = 4 if img.mode in ("RGBA", "RGBa") else 3  # as Pillow: an unspecified channel (a scan's infrared) is none
        if img.tag_v2.get(PLANAR) == 2:
            return _rgb16(_planar16(data, page)[..., :keep], premultiplied), _orientation(img)
        tagged = ORIENTATION in img.tag_v2  # OpenCV turns a TIFF as its tag says, not as its XMP does
        try:
            return _rgb16(_opencv16(data, page)[..., :keep], premultiplied), 1 if tagged else _orientation(img)
        except ImageError as opencv:
            if not page:
                raise
            try:  # OpenCV reads the pages before this one too, and fails on one it cannot read (5 channels, say)
                return _rgb16(_planar16(data, page)[..., :keep], premultiplied), _orientation(img)
            except Exception:  # noqa: BLE001  # broken for tifffile too: OpenCV's reason, not the per-channel advice
                raise opencv from None
    if img.format == "TIFF" and img.tag_v2.get(SAMPLE_FORMAT) in (2, (2,)):  # Pillow reads signed gray as unsigned
        raise ImageError(UNSUPPORTED_TIFF)
    white_is_zero = img.format == "TIFF" and img.tag_v2.get(PHOTOMETRIC) == 0  # Pillow inverts 8-bit ones only
    img.load()
    return _to_picture(_srgb(img, icc), white_is_zero), _orientation(img)


def _srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """A CMYK photo (print work) made RGB through its own profile, as a colour-managed viewer shows it; Pillow's
    formula alone (R = 255 - C - K) shows it more saturated and darker. Without a profile, or with one LittleCMS
    cannot use, the formula it is."""
    if img.mode != "CMYK" or icc is None or icc[16:20] != b"CMYK":
        return img
    from PIL import ImageCms
    try:
        return ImageCms.profileToProfile(img, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                         ImageCms.createProfile("sRGB"), outputMode="RGB")
    except ImageCms.PyCMSError:
        return img


def _orientation(img: Image.Image) -> int:
    """EXIF's (TIFF's) orientation tag, or XMP's where EXIF has none, as Pillow reads them. Read here rather than
    by Pillow's exif_transpose, which rewrites the whole EXIF and fails on a tag of an unexpected type."""
    value = img.getexif().get(ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1  # 9 and up: no orientation EXIF names


def _upright(picture: Picture, orientation: int) -> Picture:
    turn = _ORIENTED.get(orientation)
    if turn is None:
        return picture
    alpha = None if picture.alpha is None else np.ascontiguousarray(turn(picture.alpha))
    return replace(picture, pixels=np.ascontiguousarray(turn(picture.pixels)), alpha=alpha)


ORIENTATION = 0x0112  # the EXIF tag, and TIFF's of the same number and meaning
EXIF_IFD, PIXEL_X, PIXEL_Y = 0x8769, 0xA002, 0xA003  # EXIF: the Exif IFD's offset; the width and height in it
DESCRIPTIVE_TAGS = (33432, 315, 271, 272, 306, 270, 305)  # TIFF/EXIF: copyright, artist, make, model, date and
# time, description, software: in this order they take the room of one EXIF block (a machine's description is long)
PAGE_INFO = ("icc_profile", "dpi", "resolution", "xmp", "exif")  # what Pillow reads of a TIFF page into info
NEW_SUBFILE_TYPE = 254  # TIFF: bit 0 set = a reduced-size copy of another page (a thumbnail)
X_RESOLUTION = 282  # TIFF: without it Pillow reads 1 dpi
PHOTOMETRIC = 262  # TIFF: 0 = MinIsWhite (0 is white)
PLANAR = 284  # TIFF: 2 = one plane a sample ("per channel"), 1 = interleaved
EXTRA_SAMPLES = 338  # TIFF: 1 = alpha premultiplied into the colours ("associated"), 2 = not
SAMPLE_FORMAT = 339  # TIFF: 1 = unsigned, 2 = signed, 3 = float
BITS_PER_SAMPLE = 258  # TIFF
DNG_VERSION = 50706  # TIFF: a raw camera file, whose first image is its preview
_ORIENTED: dict[int, Callable[[np.ndarray], np.ndarray]] = {  # (H, W[, C]) upright, for each EXIF orientation
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


def _is_deep(img: Image.Image, data: bytes) -> bool:
    """A PNG, TIFF or PPM of more than 8 bits per colour sample (a film scan, a raw converter's output), or a
    16-bit gray PNG with alpha: Pillow would read it as 8-bit RGB(A)."""
    if img.format == "PNG":
        return len(data) > 25 and data[24] == 16 and data[25] in (2, 4, 6)
    if img.format == "PPM":
        return img.mode == "RGB" and img.tile[0].codec_name in ("ppm", "ppm_plain") and img.tile[0].args[1] > 255
    return img.format == "TIFF" and img.mode in ("RGB", "RGBA") and set(img.tag_v2.get(BITS_PER_SAMPLE, ())) == {16}


def _opencv16(data: bytes, page: int = 0) -> np.ndarray:
    """(H, W, 3 or 4) uint16 RGB(A) of a 16-bit colour PNG or interleaved TIFF (that page of it)."""
    import cv2  # only here: the API and the CLI start without OpenCV
    buf = np.frombuffer(data, np.uint8)
    if page:  # that page alone: the others are not decoded, nor held to the limits
        ok, pages = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED, None, (page, page + 1))
        arr = pages[0] if ok and len(pages) == 1 else None
    else:
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # no EXIF turn
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        raise ImageError("broken 16-bit colour image")
    return np.concatenate([arr[..., 2::-1], arr[..., 3:]], axis=2)  # BGR(A) -> RGB(A)


def _planar16(data: bytes, number: int) -> np.ndarray:
    """The same of a planar ("per channel") 16-bit TIFF's page, by tifffile: OpenCV reads one as noise and memory
    left from an earlier decode."""
    import tifffile  # only here, as OpenCV
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[number]
        if page.compression not in (1, 8, 32946):  # none, deflate: tifffile alone undoes LZW with imagecodecs only
            raise ImageError(f"16-bit per-channel TIFF compressed with {page.compression.name} is not supported; "
                             f"save it interleaved (per pixel)")
        if page.compression != 1:
            _check_inflated(data, page.dataoffsets, page.databytecounts, math.prod(page.chunks) * page.dtype.itemsize)
        arr = page.asarray()
    arr = np.moveaxis(arr, 0, -1) if page.axes == "SYX" else arr
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError("broken 16-bit colour image")
    return arr


def _check_inflated(data: bytes, offsets: tuple[int, ...], counts: tuple[int, ...], room: int) -> None:
    """tifffile inflates a strip whole, then cuts it to its size: a few KB of zeros could take gigabytes. Each strip
    is inflated here first, up to one byte more than it holds."""
    view = memoryview(data)
    for offset, count in zip(offsets, counts, strict=True):
        try:
            if len(zlib.decompressobj().decompress(view[offset:offset + count], room + 1)) > room:
                raise TooLarge("decompression bomb: a strip of the TIFF inflates past its size")
        except zlib.error:
            raise ImageError("broken 16-bit colour image: a strip does not inflate") from None


def _ppm16(data: bytes, img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint16 of a colour PPM with samples up to maxval (256-65535), scaled to 65535 as a 16-bit PNG's."""
    (w, h), tile = img.size, img.tile[0]
    count, maxval = w * h * 3, tile.args[1]
    if tile.codec_name == "ppm":  # binary: big-endian 16-bit samples
        if len(data) - tile.offset < 2 * count:
            raise ImageError("truncated image: fewer samples than its size")
        samples = np.frombuffer(data, ">u2", count, tile.offset).astype(np.float32)
    else:  # plain: decimal numbers, parsed without a Python object each
        samples = np.fromstring(data[tile.offset:].decode("ascii", "replace"), np.float32, sep=" ")[:count]
        if samples.size < count:
            raise ImageError("truncated image: fewer samples than its size")
    return np.round(samples.clip(0, maxval) * np.float32(65535 / maxval)).astype(np.uint16).reshape(h, w, 3)


def _rgb16(arr: np.ndarray, premultiplied: bool) -> Picture:
    """arr: (H, W, C) uint16 RGB(A), or gray and alpha (C = 2), as stored (not yet turned)."""
    colours = 1 if arr.shape[2] == 2 else 3
    pixels = arr[..., :colours].astype(np.float32) / 65535.0
    alpha = arr[..., colours].astype(np.float32) / 65535.0 if arr.shape[2] > colours else None
    if premultiplied and alpha is not None:  # as Pillow un-premultiplies the 8-bit ones
        pixels = np.where(alpha[..., None] > 0, pixels / np.maximum(alpha[..., None], 1e-12), 0).clip(0, 1)
    return Picture(np.ascontiguousarray(pixels, dtype=np.float32), alpha, 16)


def decode_file(path: Path, limits: Limits) -> Picture:
    return decode(read_file(path, limits), limits)


def read_file(path: Path, limits: Limits) -> bytes:
    """A file's bytes, refused by its header (size in bytes and pixels) before it is read whole."""
    with path.open("rb") as file:
        probe_file(file, os.fstat(file.fileno()).st_size, limits)
        file.seek(0)
        return file.read()


def probe(data: bytes, limits: Limits) -> tuple[int, int]:
    """Header-only check (size and limits, no pixel decoding); raises ImageError like decode."""
    with _reasons():
        return _open(data, limits).size


def probe_file(file: BinaryIO, size: int, limits: Limits) -> tuple[int, int]:
    """probe() of a file of `size` bytes: Pillow reads the header only, so a large file never enters memory."""
    file.seek(0)
    with _reasons():
        return _open_stream(file, size, limits).size


def _open(data: bytes, limits: Limits) -> Image.Image:
    return _open_stream(io.BytesIO(data), len(data), limits)


def _open_stream(stream: BinaryIO, size: int, limits: Limits) -> Image.Image:
    if not size:
        raise ImageError("empty file")
    if size > limits.max_bytes:
        raise TooLarge(f"file is {size} bytes, the limit is {limits.max_bytes}")
    try:
        img = Image.open(stream, formats=FORMATS)
    except UnidentifiedImageError:
        stream.seek(0)
        head = stream.read(12)
        if head[:4] in TIFF_MAGIC:  # a TIFF Pillow has no decoder for: say so, not "unknown format"
            if _directory_cut_off(stream, size):  # a compressed TIFF keeps its directory at the end
                raise ImageError("broken or truncated image: the TIFF's directory is cut off (the file ends at "
                                 f"{size} bytes)") from None
            raise ImageError(UNSUPPORTED_TIFF) from None
        if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:  # a phone's default: say what to do
            raise ImageError("HEIC/HEIF images are not supported; export the photo as JPEG (or set the phone's "
                             "camera to 'most compatible')") from None
        stream.seek(0)
        if not head.startswith(PNG_SIGNATURE) or (repaired := _without_broken_metadata(stream.read())) is None:
            raise
        img = Image.open(io.BytesIO(repaired), formats=["PNG"])
    if img.format == "TIFF" and DNG_VERSION in img.tag_v2:  # Pillow would read its small preview
        raise ImageError("raw camera files (DNG) are not supported; export the photo as TIFF or JPEG")
    _check_size(img.size, limits)
    return img


def _directory_cut_off(stream: BinaryIO, size: int) -> bool:
    """Whether a TIFF's first directory (image file directory) ends past the end of the file."""
    stream.seek(0)
    head = stream.read(16)
    order, big = "<" if head[:2] == b"II" else ">", head[2:4] in (b"+\0", b"\0+")
    count_size, entry_size, offset_size = (8, 20, 8) if big else (2, 12, 4)
    if len(head) < 8 + 8 * big:
        return True
    offset = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
    stream.seek(offset)
    count = stream.read(count_size)
    if len(count) < count_size:
        return True
    entries = struct.unpack(order + ("Q" if big else "H"), count)[0]
    return offset + count_size + entries * entry_size + offset_size > size


def _without_broken_metadata(png: bytes) -> bytes | None:
    """The PNG without its ancillary chunks (text, time, ...) whose checksum fails, as browsers and libpng show it;
    Pillow refuses the whole file. None when there are none."""
    out, pos, dropped = bytearray(png[:8]), 8, False
    while pos + 12 <= len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        end = pos + 12 + length
        kind, body = png[pos + 4:pos + 8], png[pos + 8:end - 4]
        broken = end > len(png) or struct.unpack_from(">I", png, end - 4)[0] != zlib.crc32(kind + body)
        if broken and kind[0] & 32:  # ancillary: a lower-case first letter
            dropped = True
        else:
            out += png[pos:end]
        pos = end
    return bytes(out + png[pos:]) if dropped else None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UNSUPPORTED_TIFF = ("TIFF with a sample format or layout that is not supported (float, signed or 32-bit colour "
                    "samples, or extra channels)")
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # little and big endian, classic and BigTIFF
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")


@contextmanager
def _reasons() -> Iterator[None]:
    """Turns the many ways Pillow fails into an ImageError with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooLarge(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unknown format)") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on user bytes (Pillow's AVIF plugin: RuntimeError)
        raise ImageError(f"broken or truncated image: {e}") from None


def _check_size(size: tuple[int, int], limits: Limits) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if max(w, h) > limits.max_side or w * h > limits.max_pixels:
        raise TooLarge(f"image is {w}x{h}; the limits are {limits.max_side} px a side and {limits.max_pixels} pixels")


def _to_picture(img: Image.Image, white_is_zero: bool) -> Picture:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.int64)
        if img.format == "TIFF" and img.tag_v2.get(BITS_PER_SAMPLE) in (32, (32,)):  # Pillow holds unsigned 32 bits as signed
            arr, full = arr & 0xFFFFFFFF, 2.0**32 - 1
        else:
            full = 65535.0 if mode != "I" or arr.max(initial=0) <= 65535 else 2.0**31 - 1  # "I": 32-bit samples
        gray = np.clip(arr / full, 0, 1).astype(np.float32)[..., None]
        key = img.info.get("transparency")  # a PNG's tRNS: the gray value of transparent pixels
        alpha = (arr != key).astype(np.float32) if isinstance(key, int) else None
        return Picture(1 - gray if white_is_zero else gray, alpha, 16)
    if mode == "F":
        raise ImageError("floating point images are not supported")
    keyed = "transparency" in img.info  # a colour key (PNG's tRNS) marks transparent pixels of P, L and RGB
    has_alpha = mode in ("RGBA", "LA", "La", "PA") or keyed
    if mode in ("L", "LA", "La", "1"):  # La: a TIFF's alpha premultiplied into the gray, which LA takes out
        gray = img.convert("LA") if has_alpha else img.convert("L")
        base, alpha = (gray.getchannel("L"), gray.getchannel("A")) if has_alpha else (gray, None)
    else:
        rgba = img.convert("RGBA") if has_alpha else None
        base = img.convert("RGB")
        alpha = rgba.getchannel("A") if rgba is not None else None
    pixels = np.asarray(base, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return Picture(pixels, None if alpha is None else np.asarray(alpha, dtype=np.float32) / 255.0, 8)


def encode_png(picture: Picture) -> bytes:
    """PNG in the picture's own bit depth, alpha included (gray with alpha as RGBA). OpenCV's encoder with zlib
    level 1 and run-length matching: 1.7x Pillow's level 1 on a 512x512 photo, and smaller."""
    import cv2  # Pillow cannot write 16-bit colour; lazily, so the API starts without it
    pixels = picture.pixels[..., ::-1]  # OpenCV's channel order
    if picture.alpha is not None:
        pixels = np.concatenate([np.broadcast_to(pixels, (*pixels.shape[:2], 3)), picture.alpha[..., None]], axis=2)
    scale, dtype = (65535, np.uint16) if picture.bit_depth == 16 else (255, np.uint8)
    arr = np.round(np.clip(pixels, 0, 1) * scale).astype(dtype)
    ok, png = cv2.imencode(".png", arr[..., 0] if arr.shape[2] == 1 else arr,
                           [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    assert ok, "OpenCV encodes every 1-, 3- or 4-channel 8- or 16-bit image"
    space, chunks = b"GRAY" if arr.shape[2] == 1 else b"RGB ", []
    if picture.icc is not None and picture.icc[16:20] == space:  # a CMYK profile does not describe the RGB made of it
        chunks.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(picture.icc)))  # name, method 0 (zlib)
    if picture.gamma is not None:  # in 1/100000s, as are the cHRM's values
        chunks.append(_chunk(b"gAMA", struct.pack(">I", round(picture.gamma * 100_000))))
    if picture.chromaticity is not None:
        chunks.append(_chunk(b"cHRM", struct.pack(">8I", *(round(v * 100_000) for v in picture.chromaticity))))
    if picture.exif is not None:
        chunks.append(_chunk(b"eXIf", picture.exif))
    if picture.xmp is not None:  # iTXt, keyword, uncompressed, no language nor translated keyword (the XMP spec's)
        chunks.append(_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + picture.xmp))
    if picture.dpi is not None:  # pixels a metre (unit 1)
        chunks.append(_chunk(b"pHYs", struct.pack(">IIB", *(round(d / 0.0254) for d in picture.dpi), 1)))
    png_bytes = png.tobytes()
    return png_bytes[:33] + b"".join(chunks) + png_bytes[33:]  # after the signature (8) and IHDR (25): OpenCV writes none


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def thumbnail_jpeg(png_bytes: bytes, size: int) -> bytes:
    """A JPEG at most `size` px a side of a stored PNG (8 or 16 bit, gray, RGB or RGBA on white)."""
    img = Image.open(io.BytesIO(png_bytes))
    icc = img.info.get("icc_profile")
    if img.mode.startswith("I"):
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8))
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGB", img.size, "white")
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        img = background
    img = img.convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    keep = icc is not None and icc[16:20] == b"RGB " and len(icc) <= THUMBNAIL_PROFILE_MOST
    img.save(buf, format="JPEG", quality=85, icc_profile=icc if keep else None)
    return buf.getvalue()
