"""Header-only parsers for the container formats: HEIF/AVIF (ISOBMFF boxes) and TIFF (IFDs).

Both formats may keep their header anywhere in the file (a TIFF's first IFD is often written after the
pixel data; an ISOBMFF `meta` box may follow `mdat`), so the parsers read through a `ByteWindow`: the
bytes intake has fetched so far, contiguous from the start plus far ranges. A read outside them raises
`NeedBytes(offset, length)`; the caller fetches that range and parses again. Nothing is decoded and
nothing proportional to the declared image is allocated: every count read from the file is bounded
before it is used.

`ContainerError` is a damaged file; `UnsupportedFeature` a well-formed file using something the engine
does not decode (float samples, a codec other than HEVC/AV1, ...). Both carry a sentence for a person.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

MAX_BOXES = 4_096  # boxes visited in one file; real HEIC/AVIF files have a few dozen
MAX_ITEMS = 4_096  # items in a HEIF `iinf` (an iPhone photo: ~60: the grid, its tiles, thumbnail, Exif)
MAX_IFDS = 1_024  # pages walked in a TIFF
MAX_IFD_ENTRIES = 1_024  # tags in one IFD (real files: 15-60)


class NeedBytes(Exception):
    """The header continues at [offset, offset + length), which has not been read yet."""

    def __init__(self, offset: int, length: int) -> None:
        super().__init__(f"need bytes {offset}..{offset + length}")
        self.offset = offset
        self.length = length


class ContainerError(ValueError):
    """The header is damaged or impossible (the message completes 'The X header is damaged: ...')."""


class UnsupportedFeature(ValueError):
    """A well-formed file that uses something the engine cannot decode (the message is a full sentence)."""


class ByteWindow:
    """The parts of a file read so far. `size`: the file's size when known (reads past it are corrupt)."""

    def __init__(self, head: bytes, far: Mapping[int, bytes] | None = None, size: int | None = None) -> None:
        self.head = head
        self.far = dict(far or {})
        self.size = size

    def get(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ContainerError("a negative offset or length")
        end = offset + length
        if self.size is not None and end > self.size:
            raise ContainerError(f"data at byte {offset} lies beyond the end of the file (truncated upload?)")
        if end <= len(self.head):
            return self.head[offset:end]
        for start, chunk in self.far.items():
            if start <= offset and end <= start + len(chunk):
                return chunk[offset - start:end - start]
        raise NeedBytes(offset, length)

    def u8(self, offset: int) -> int:
        return self.get(offset, 1)[0]

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack(fmt, self.get(offset, struct.calcsize(fmt)))


# --- ISOBMFF: HEIF (HEVC) and AVIF (AV1) ----------------------------------------------------------

HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
GENERIC_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"miaf", b"mif2"})
_SEQUENCE_BRANDS = frozenset({b"avis", b"msf1", b"hevs", b"heis"})
_ALPHA_AUX = (b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha", b"urn:mpeg:hevc:2015:auxid:1")
# Item types whose pixels the decoders (libheif via pillow-heif; libavif via Pillow) produce.
_CODED = {b"hvc1": "heic", b"av01": "avif"}
_DERIVED = frozenset({b"grid", b"iden", b"iovl"})


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """What a container header declares, in the terms intake's limits use."""

    format: str  # "heic" | "avif" | "tiff"
    width: int  # as displayed (HEIF: after irot; TIFF: after the Orientation tag)
    height: int
    bits_per_sample: int
    channels: int
    frames: int  # images of an image sequence / bursts / TIFF pages (1: a still image)
    work_pixels: int  # pixels a decoder buffers at once if more than width x height (HEIF grid tiles, TIFF tiles)
    orientation: int | None = None  # TIFF Orientation tag


def ftyp_brands(head: bytes) -> tuple[bytes, frozenset[bytes]] | None:
    """(major brand, compatible brands) of an ISOBMFF file's leading ftyp box, or None."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    size = struct.unpack_from(">I", head)[0]
    end = min(len(head), size if 16 <= size <= 4096 else 16)
    compatible = frozenset(head[pos:pos + 4] for pos in range(16, end - 3, 4))
    return head[8:12], compatible


def isobmff_kind(head: bytes) -> str | None:
    """'heic', 'avif' or 'heif' (an image container of neither brand) from the ftyp box; None if not an image."""
    brands = ftyp_brands(head)
    if brands is None:
        return None
    major, compatible = brands
    everything = {major, *compatible}
    if major in AVIF_BRANDS:
        return "avif"
    if major in HEIC_BRANDS:
        return "heic"
    if everything & AVIF_BRANDS:
        return "avif"
    if everything & HEIC_BRANDS:
        return "heic"
    if everything & GENERIC_HEIF_BRANDS:
        return "heif"
    return None


@dataclass(frozen=True, slots=True)
class _Box:
    type: bytes
    start: int  # offset of the box header
    body: int  # offset of the payload
    end: int  # offset one past the box; None-size boxes ("to end of file") end at the window's size


def _boxes(src: ByteWindow, start: int, end: int | None, budget: list[int]) -> Iterator[_Box]:
    """The boxes in [start, end); end None: the top level, up to the end of the file (NeedBytes if unknown)."""
    limit = end if end is not None else src.size
    pos = start
    while limit is None or pos + 8 <= limit:
        size, kind = struct.unpack(">I4s", src.get(pos, 8))
        body = pos + 8
        if size == 1:
            size = src.unpack(">Q", body)[0]
            body += 8
        elif size == 0:  # the box runs to the end of its parent (or of the file)
            if limit is None:
                raise NeedBytes(pos, 16)  # only the file's size tells where it ends
            size = limit - pos
        if size < body - pos or (limit is not None and pos + size > limit):
            raise ContainerError(f"box {kind.decode('latin-1', 'replace')!r} at byte {pos} has an impossible "
                                 f"size {size}")
        budget[0] -= 1
        if budget[0] < 0:
            raise ContainerError(f"more than {MAX_BOXES} boxes")
        yield _Box(kind, pos, body, pos + size)
        pos += size


def _children(src: ByteWindow, box: _Box, budget: list[int], *, full: bool = False) -> dict[bytes, _Box]:
    """First child of each type (a FullBox container skips its 4-byte version/flags)."""
    found: dict[bytes, _Box] = {}
    for child in _boxes(src, box.body + (4 if full else 0), box.end, budget):
        found.setdefault(child.type, child)
    return found


def _version_flags(src: ByteWindow, box: _Box) -> tuple[int, int]:
    word = src.unpack(">I", box.body)[0]
    return word >> 24, word & 0xFFFFFF


@dataclass(slots=True)
class _Item:
    type: bytes
    hidden: bool
    props: list[int]


def parse_isobmff(src: ByteWindow) -> ContainerFacts:
    """The primary image of a HEIF/AVIF file: displayed size, bit depth, alpha, and how many images it holds."""
    budget = [MAX_BOXES]
    kind = isobmff_kind(src.head) or "heif"
    major, compatible = ftyp_brands(src.head) or (b"", frozenset())
    sequence = bool({major, *compatible} & _SEQUENCE_BRANDS)
    top: dict[bytes, _Box] = {}
    for box in _boxes(src, 0, None, budget):
        top.setdefault(box.type, box)
        if b"meta" in top and (b"moov" in top or not sequence):
            break  # the rest is (usually) mdat: never read
    frames = _sequence_frames(src, top[b"moov"], budget) if b"moov" in top else 1
    if b"meta" not in top:
        if b"moov" in top:
            raise UnsupportedFeature(
                f"This {_NAME[kind]} file is an image sequence ({frames} frames) without a still primary image; "
                "only still images can be upscaled. Export one frame as PNG or JPEG.")
        raise ContainerError("no meta box (not an image file)")
    facts = _primary_image(src, top[b"meta"], kind, budget)
    if frames > 1:
        return _replace_frames(facts, max(frames, facts.frames))
    return facts


_NAME = {"heic": "HEIC", "avif": "AVIF", "heif": "HEIF", "tiff": "TIFF"}


def _replace_frames(facts: ContainerFacts, frames: int) -> ContainerFacts:
    return ContainerFacts(facts.format, facts.width, facts.height, facts.bits_per_sample, facts.channels, frames,
                          facts.work_pixels, facts.orientation)


def _sequence_frames(src: ByteWindow, moov: _Box, budget: list[int]) -> int:
    """Samples in the first picture/video track of an image sequence (animated AVIF, HEIF sequence)."""
    for trak in _boxes(src, moov.body, moov.end, budget):
        if trak.type != b"trak":
            continue
        mdia = _children(src, trak, budget).get(b"mdia")
        if mdia is None:
            continue
        mdia_children = _children(src, mdia, budget)
        hdlr = mdia_children.get(b"hdlr")
        if hdlr is None or src.get(hdlr.body + 8, 4) not in (b"pict", b"vide"):
            continue
        stbl = _descend(src, mdia_children.get(b"minf"), (b"stbl",), budget)
        if stbl is None:
            continue
        stsz = _children(src, stbl, budget).get(b"stsz")
        if stsz is not None:
            return int(src.unpack(">I", stsz.body + 8)[0])
    return 1


def _descend(src: ByteWindow, box: _Box | None, path: tuple[bytes, ...], budget: list[int]) -> _Box | None:
    for kind in path:
        if box is None:
            return None
        box = _children(src, box, budget).get(kind)
    return box


def _primary_image(src: ByteWindow, meta: _Box, kind: str, budget: list[int]) -> ContainerFacts:
    children = _children(src, meta, budget, full=True)
    hdlr = children.get(b"hdlr")
    if hdlr is None or src.get(hdlr.body + 8, 4) != b"pict":
        raise ContainerError("the meta box is not a picture handler")
    pitm = children.get(b"pitm")
    if pitm is None:
        raise ContainerError("no primary item (pitm)")
    version, _ = _version_flags(src, pitm)
    primary = src.unpack(">H" if version == 0 else ">I", pitm.body + 4)[0]
    items = _items(src, children.get(b"iinf"), budget)
    refs = _references(src, children.get(b"iref"), budget)
    properties, associations = _properties(src, children.get(b"iprp"), budget)
    for item_id, props in associations.items():
        if item_id in items:
            items[item_id].props = props
    if primary not in items:
        raise ContainerError(f"the primary item {primary} is not listed in iinf")

    item = items[primary]
    tiles = refs.get((b"dimg", primary), [])
    coded_type = item.type
    if item.type in _DERIVED:
        if not tiles:
            raise ContainerError(f"the derived primary image ({item.type.decode('latin-1')}) names no source images")
        coded_type = items[tiles[0]].type if tiles[0] in items else b"????"
    if coded_type not in _CODED:
        name = coded_type.decode("latin-1", "replace").strip()
        raise UnsupportedFeature(
            f"This {_NAME[kind]} file stores its image with the '{name}' codec; only HEVC (HEIC) and AV1 (AVIF) "
            "images can be decoded. Export it as JPEG or PNG.")
    fmt = _CODED[coded_type]

    def prop(item_id: int, box_type: bytes) -> _Box | None:
        for index in items[item_id].props if item_id in items else ():
            if 0 < index <= len(properties) and properties[index - 1].type == box_type:
                return properties[index - 1]
        return None

    ispe = prop(primary, b"ispe")
    if ispe is None:
        raise ContainerError("the primary image has no size (ispe)")
    width, height = src.unpack(">II", ispe.body + 4)
    if width == 0 or height == 0:
        raise ContainerError("the primary image declares a zero dimension")
    irot = prop(primary, b"irot")
    if irot is not None and src.u8(irot.body) & 1:
        width, height = height, width  # rotated by 90 or 270 degrees: displayed sideways

    work = width * height
    if tiles:
        tile_pixels = 0
        for tile in tiles[:MAX_ITEMS]:
            tile_ispe = prop(tile, b"ispe")
            if tile_ispe is None:
                raise ContainerError(f"grid tile {tile} has no size (ispe)")
            tw, th = src.unpack(">II", tile_ispe.body + 4)
            tile_pixels += tw * th
        work = max(work, tile_pixels)

    _check_extents(src, children.get(b"iloc"), {primary, *tiles})
    bits = _bit_depth(src, prop(primary, b"pixi") or (prop(tiles[0], b"pixi") if tiles else None),
                      prop(tiles[0] if tiles else primary, b"hvcC"), prop(tiles[0] if tiles else primary, b"av1C"))
    alpha = False
    for (ref_type, from_id), to_ids in refs.items():
        if ref_type == b"auxl" and primary in to_ids:
            aux_c = prop(from_id, b"auxC")
            aux_type = src.get(aux_c.body + 4, min(64, aux_c.end - aux_c.body - 4)) if aux_c else b""
            alpha = alpha or aux_type.startswith(_ALPHA_AUX)
    return ContainerFacts(fmt, width, height, bits, 4 if alpha else 3, _top_level_images(items, refs), work)


def _check_extents(src: ByteWindow, iloc: _Box | None, wanted: set[int]) -> None:
    """The coded data of the items to decode must lie inside the file: a truncated upload is found here."""
    if iloc is None or src.size is None:
        return
    version, _ = _version_flags(src, iloc)
    sizes = src.unpack(">H", iloc.body + 4)[0]
    offset_size, length_size, base_size = sizes >> 12, (sizes >> 8) & 15, (sizes >> 4) & 15
    index_size = sizes & 15 if version in (1, 2) else 0
    if {offset_size, length_size, base_size, index_size} - {0, 4, 8}:
        raise ContainerError("iloc field sizes other than 0, 4 or 8 bytes")
    pos = iloc.body + 6
    count = src.unpack(">H" if version < 2 else ">I", pos)[0]
    pos += 2 if version < 2 else 4
    if count > MAX_ITEMS:
        raise ContainerError(f"{count} item locations (more than {MAX_ITEMS})")

    def field(size: int) -> int:
        nonlocal pos
        value = int.from_bytes(src.get(pos, size), "big") if size else 0
        pos += size
        return value

    for _ in range(count):
        item_id = field(2 if version < 2 else 4)
        method = field(2) & 15 if version in (1, 2) else 0
        field(2)  # data_reference_index
        base = field(base_size)
        extents = field(2)
        for _ in range(extents):
            field(index_size)
            start, length = base + field(offset_size), field(length_size)
            if item_id in wanted and method == 0 and start + length > src.size:
                raise ContainerError(f"the image data runs to byte {start + length:,} but the file ends at byte "
                                     f"{src.size:,} (truncated upload?)")


def _top_level_images(items: Mapping[int, _Item], refs: Mapping[tuple[bytes, int], list[int]]) -> int:
    """Images a viewer shows: not hidden, not a thumbnail/auxiliary (depth, alpha, gain map), not a grid tile.

    This is libheif's notion of the top-level images; more than one is a burst / collection.
    """
    derived_from = {t for (ref_type, _), targets in refs.items() if ref_type == b"dimg" for t in targets}
    secondary = {source for (ref_type, source) in refs if ref_type in (b"thmb", b"auxl")}
    count = 0
    for item_id, item in items.items():
        if item.hidden or item_id in derived_from or item_id in secondary:
            continue
        if item.type in _CODED or item.type in _DERIVED:
            count += 1
    return max(count, 1)


def _items(src: ByteWindow, iinf: _Box | None, budget: list[int]) -> dict[int, _Item]:
    if iinf is None:
        raise ContainerError("no item list (iinf)")
    version, _ = _version_flags(src, iinf)
    count = src.unpack(">H" if version == 0 else ">I", iinf.body + 4)[0]
    if count > MAX_ITEMS:
        raise ContainerError(f"{count} items (more than {MAX_ITEMS})")
    items: dict[int, _Item] = {}
    for infe in _boxes(src, iinf.body + (6 if version == 0 else 8), iinf.end, budget):
        if infe.type != b"infe":
            continue
        infe_version, flags = _version_flags(src, infe)
        if infe_version < 2:
            continue  # pre-HEIF item infos carry no item type
        if infe_version == 2:
            item_id, _, item_type = struct.unpack(">HH4s", src.get(infe.body + 4, 8))
        else:
            item_id, _, item_type = struct.unpack(">IH4s", src.get(infe.body + 4, 10))
        items[item_id] = _Item(item_type, bool(flags & 1), [])
    return items


def _references(src: ByteWindow, iref: _Box | None, budget: list[int]) -> dict[tuple[bytes, int], list[int]]:
    refs: dict[tuple[bytes, int], list[int]] = {}
    if iref is None:
        return refs
    version, _ = _version_flags(src, iref)
    id_fmt, id_size = (">H", 2) if version == 0 else (">I", 4)
    for ref in _boxes(src, iref.body + 4, iref.end, budget):
        pos = ref.body
        from_id = src.unpack(id_fmt, pos)[0]
        (count,) = src.unpack(">H", pos + id_size)
        if pos + id_size + 2 + count * id_size > ref.end:
            raise ContainerError(f"the {ref.type.decode('latin-1')} reference lists more items than it holds")
        data = src.get(pos + id_size + 2, count * id_size)
        targets = list(struct.unpack(f">{count}{id_fmt[1]}", data)) if count else []
        refs.setdefault((ref.type, from_id), []).extend(targets)
    return refs


def _properties(src: ByteWindow, iprp: _Box | None,
                budget: list[int]) -> tuple[list[_Box], dict[int, list[int]]]:
    if iprp is None:
        raise ContainerError("no item properties (iprp)")
    children = _children(src, iprp, budget)
    ipco = children.get(b"ipco")
    if ipco is None:
        raise ContainerError("no property container (ipco)")
    properties = list(_boxes(src, ipco.body, ipco.end, budget))
    associations: dict[int, list[int]] = {}
    for ipma in _boxes(src, iprp.body, iprp.end, budget):
        if ipma.type != b"ipma":
            continue
        version, flags = _version_flags(src, ipma)
        (entries,) = src.unpack(">I", ipma.body + 4)
        if entries > MAX_ITEMS:
            raise ContainerError(f"{entries} property associations (more than {MAX_ITEMS})")
        pos = ipma.body + 8
        for _ in range(entries):
            item_id = src.unpack(">H" if version < 1 else ">I", pos)[0]
            pos += 2 if version < 1 else 4
            count = src.u8(pos)
            pos += 1
            wide = bool(flags & 1)
            raw = src.get(pos, count * (2 if wide else 1))
            pos += len(raw)
            values = struct.unpack(f">{count}{'H' if wide else 'B'}", raw) if count else ()
            associations.setdefault(item_id, []).extend(v & (0x7FFF if wide else 0x7F) for v in values)
            if pos > ipma.end:
                raise ContainerError("the property associations run past their box")
    return properties, associations


def _bit_depth(src: ByteWindow, pixi: _Box | None, hvcc: _Box | None, av1c: _Box | None) -> int:
    if pixi is not None:
        channels = src.u8(pixi.body + 4)
        if channels:
            return max(src.get(pixi.body + 5, channels))
    if hvcc is not None and hvcc.end - hvcc.body > 18:
        return 8 + (src.u8(hvcc.body + 17) & 7)
    if av1c is not None and av1c.end - av1c.body > 2:
        flags = src.u8(av1c.body + 2)
        return 12 if flags & 0x60 == 0x60 else 10 if flags & 0x40 else 8
    return 8


# --- TIFF ------------------------------------------------------------------------------------------

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_INT_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}

# Compression schemes the engine decodes (Pillow's libtiff): name for the messages.
TIFF_COMPRESSIONS = {1: "none", 5: "LZW", 7: "JPEG", 8: "Deflate", 32946: "Deflate", 32773: "PackBits",
                     2: "CCITT RLE", 3: "CCITT G3", 4: "CCITT G4"}
_COMPRESSION_NAMES = {6: "old-style JPEG", 34712: "JPEG 2000", 34925: "LZMA", 50000: "Zstandard", 50001: "WebP",
                      34892: "lossy JPEG (DNG)", 34887: "JPEG XL", 52546: "JPEG XL"}
_SAMPLE_FORMATS = {2: "signed-integer", 3: "floating-point", 4: "undefined", 5: "complex-integer",
                   6: "complex floating-point"}
# Photometric interpretation -> (name, allowed bits per sample)
_PHOTOMETRICS = {0: ("white-is-zero grayscale", (1, 4, 8)), 1: ("grayscale", (1, 4, 8, 16)), 2: ("RGB", (8, 16)),
                 3: ("palette", (1, 2, 4, 8)), 5: ("CMYK", (8,)), 6: ("YCbCr", (8,))}
_OTHER_PHOTOMETRICS = {4: "transparency mask", 8: "CIELab", 9: "ICCLab", 10: "ITULab", 32844: "LogL",
                       32845: "LogLuv", 32803: "colour filter array (raw)", 34892: "linear raw"}


@dataclass(frozen=True, slots=True)
class _Entry:
    type: int
    count: int
    value_at: int  # offset of the value (inline in the entry or out of line)


def parse_tiff(src: ByteWindow) -> ContainerFacts:
    """The first page's declared image, checked for what the engine can decode, and the page count."""
    order = src.get(0, 2)
    if order not in (b"II", b"MM"):
        raise ContainerError("unknown byte order")
    endian = "<" if order == b"II" else ">"
    (magic,) = src.unpack(endian + "H", 2)
    if magic == 43:
        raise UnsupportedFeature("This file is a BigTIFF (a TIFF over 4 GB); save it as a standard TIFF, PNG or JPEG.")
    if magic != 42:
        raise ContainerError("bad magic number")
    (first,) = src.unpack(endian + "I", 4)
    tags, next_ifd = _ifd(src, endian, first)
    facts = _tiff_page(src, endian, tags)
    pages = 1
    seen = {first}
    while next_ifd:
        if next_ifd in seen or len(seen) >= MAX_IFDS:
            raise ContainerError("the page list loops or is too long")
        seen.add(next_ifd)
        tags, following = _ifd(src, endian, next_ifd)
        if 256 not in tags or 257 not in tags:
            raise ContainerError(f"page {len(seen)} has no size")  # the decoders stumble over it, so do we
        subfile = _ints(src, endian, tags.get(254)) or [0]
        if not subfile[0] & 0b101:  # reduced-resolution copies (thumbnails) and masks are not pages
            pages += 1
        next_ifd = following
    return _replace_frames(facts, pages) if pages > 1 else facts


def _ifd(src: ByteWindow, endian: str, offset: int) -> tuple[dict[int, _Entry], int]:
    if offset < 8:
        raise ContainerError(f"IFD offset {offset} points into the header")
    (count,) = src.unpack(endian + "H", offset)
    if count == 0 or count > MAX_IFD_ENTRIES:
        raise ContainerError(f"an IFD with {count} entries")
    raw = src.get(offset + 2, count * 12 + 4)
    tags: dict[int, _Entry] = {}
    for index in range(count):
        tag, kind, n = struct.unpack_from(endian + "HHI", raw, index * 12)
        size = _TYPE_SIZES.get(kind, 1) * n
        value_at = offset + 2 + index * 12 + 8
        if size > 4:
            (value_at,) = struct.unpack_from(endian + "I", raw, index * 12 + 8)
        tags.setdefault(tag, _Entry(kind, n, value_at))
    (next_ifd,) = struct.unpack_from(endian + "I", raw, count * 12)
    return tags, next_ifd


def _ints(src: ByteWindow, endian: str, entry: _Entry | None, limit: int = 16) -> list[int]:
    """The first `limit` values of an integer tag (bounded: strip tables can hold a million entries)."""
    if entry is None:
        return []
    fmt = _INT_FORMATS.get(entry.type)
    if fmt is None:
        raise ContainerError(f"an integer tag stored as type {entry.type}")
    n = min(entry.count, limit)
    return list(struct.unpack(f"{endian}{n}{fmt}", src.get(entry.value_at, n * struct.calcsize(fmt))))


def _one(src: ByteWindow, endian: str, tags: Mapping[int, _Entry], tag: int, default: int | None = None) -> int:
    values = _ints(src, endian, tags.get(tag), limit=1)
    if values:
        return values[0]
    if default is None:
        raise ContainerError(f"required tag {tag} is missing")
    return default


def _tiff_page(src: ByteWindow, endian: str, tags: Mapping[int, _Entry]) -> ContainerFacts:
    width = _one(src, endian, tags, 256)
    height = _one(src, endian, tags, 257)
    if width == 0 or height == 0:
        raise ContainerError("zero dimension")
    samples = _one(src, endian, tags, 277, 1)
    if not 1 <= samples <= 16:
        raise ContainerError(f"{samples} samples per pixel")
    bits = _ints(src, endian, tags.get(258), limit=samples) or [1]
    sample_formats = set(_ints(src, endian, tags.get(339), limit=samples) or [1])
    compression = _one(src, endian, tags, 259, 1)
    photometric = _one(src, endian, tags, 262, 2 if samples >= 3 else 1)
    planar = _one(src, endian, tags, 284, 1)

    odd = sample_formats - {1}
    if odd:
        kind = _SAMPLE_FORMATS.get(min(odd), f"sample format {min(odd)}")
        raise UnsupportedFeature(
            f"This TIFF stores {kind} samples (scientific or HDR data); only 8- and 16-bit unsigned integer images "
            "can be upscaled. Save it as an 8- or 16-bit TIFF or PNG.")
    if compression not in TIFF_COMPRESSIONS:
        name = _COMPRESSION_NAMES.get(compression, f"scheme {compression}")
        raise UnsupportedFeature(
            f"This TIFF uses {name} compression, which is not supported; save it uncompressed or with LZW, "
            "Deflate, PackBits or JPEG compression.")
    if photometric not in _PHOTOMETRICS:
        name = _OTHER_PHOTOMETRICS.get(photometric, f"photometric interpretation {photometric}")
        raise UnsupportedFeature(
            f"This TIFF stores {name} data; only grayscale, RGB, palette, CMYK and YCbCr images can be upscaled. "
            "Save it as an RGB TIFF or PNG.")
    name, allowed_bits = _PHOTOMETRICS[photometric]
    if len(set(bits)) != 1 or bits[0] not in allowed_bits:
        shown = "/".join(str(b) for b in bits)
        raise UnsupportedFeature(
            f"This {name} TIFF has {shown} bits per sample; supported are "
            f"{', '.join(str(b) for b in allowed_bits)}. Save it as an 8- or 16-bit TIFF or PNG.")
    if photometric == 1 and bits[0] == 16 and samples > 1:
        raise UnsupportedFeature("This TIFF is 16-bit grayscale with an alpha channel, which cannot be decoded; "
                                 "save it as 16-bit RGBA or 8-bit grayscale with alpha.")
    if compression in (2, 3, 4) and bits[0] != 1:
        raise ContainerError("CCITT compression of a non-bilevel image")
    if planar not in (1, 2):
        raise ContainerError(f"planar configuration {planar}")

    work = width * height
    if 322 in tags or 323 in tags:
        tile_w, tile_h = _one(src, endian, tags, 322), _one(src, endian, tags, 323)
        if tile_w % 16 or tile_h % 16 or not tile_w or not tile_h:
            # The spec's rule; it also keeps a 16 MP image from being millions of 1x1 tiles (slow to decode).
            raise ContainerError(f"tile size {tile_w}×{tile_h} is not a multiple of 16")
        work = max(work, tile_w * tile_h)  # one tile is buffered whole, however little of it the image uses
    else:
        rows = min(_one(src, endian, tags, 278, height), height)
        if rows == 0:
            raise ContainerError("zero rows per strip")
    gray = photometric in (0, 1) and samples == 1
    orientation = _one(src, endian, tags, 274, 1)
    if orientation in (5, 6, 7, 8):
        width, height = height, width  # as displayed: Pillow applies the Orientation tag when it loads a TIFF
    return ContainerFacts("tiff", width, height, bits[0], 1 if gray else 4 if samples != 3 else 3, 1, work,
                          orientation if 1 <= orientation <= 8 else None)
