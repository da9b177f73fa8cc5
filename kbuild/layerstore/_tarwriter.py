"""Deterministic tar headers: ustar, with PAX records only when needed.

Owners are always 0/0 with empty user and group names; the caller decides
the order of entries and the mtimes.
"""

from __future__ import annotations

import zlib

BLOCK = 512
_MAX_OCTAL_11 = 0o77777777777
_MAX_OCTAL_7 = 0o7777777
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
ZEROS = b"\0" * BLOCK

REGTYPE = b"0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
PAXTYPE = b"x"


def padding(size: int) -> int:
    """Bytes of zero padding after ``size`` bytes of member data."""
    return -size % BLOCK


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _split_name(name: bytes) -> tuple[bytes, bytes] | None:
    """Split ``name`` into ustar ``(prefix, name)``, or ``None`` if it does not fit."""
    if len(name) <= 100:
        return b"", name
    if len(name) > 256:
        return None
    # The prefix ends at a '/', holds at most 155 bytes; the rest at most 100.
    start = max(0, len(name) - 101)
    for i in range(start, min(len(name), 156)):
        if name[i : i + 1] == b"/" and 0 < len(name) - i - 1 <= 100:
            return name[:i], name[i + 1 :]
    return None


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def _raw_header(
    name: bytes,
    prefix: bytes,
    mode: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    devmajor: int,
    devminor: int,
) -> bytes:
    buf = bytearray(BLOCK)
    buf[0 : len(name)] = name
    buf[100:108] = _octal(mode, 8)
    buf[108:116] = _octal(0, 8)
    buf[116:124] = _octal(0, 8)
    buf[124:136] = _octal(size, 12)
    buf[136:148] = _octal(mtime, 12)
    buf[148:156] = b"        "
    buf[156:157] = typeflag
    buf[157 : 157 + len(linkname)] = linkname
    buf[257:265] = b"ustar\x0000"
    buf[329:337] = _octal(devmajor, 8)
    buf[337:345] = _octal(devminor, 8)
    buf[345 : 345 + len(prefix)] = prefix
    # Every header byte is ASCII (<= 127), so the sum stays below 65521 and the low
    # half of Adler-32 (1 + sum mod 65521) gives the tar checksum in C speed.
    buf[148:156] = b"%06o\0 " % ((zlib.adler32(buf) & 0xFFFF) - 1)
    return bytes(buf)


def header(
    name: str,
    *,
    mode: int,
    size: int = 0,
    mtime: int = 0,
    typeflag: bytes = REGTYPE,
    linkname: str = "",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: dict[str, bytes] | None = None,
) -> bytes:
    """The header block(s) of one member: a PAX header first when a field does not fit."""
    bname = name.encode("utf-8", "surrogateescape")
    blink = linkname.encode("utf-8", "surrogateescape")
    pax: list[bytes] = []
    split = _split_name(bname) if bname.isascii() else None
    if split is None:
        pax.append(_pax_record("path", bname))
        prefix, short = b"", bname[-100:].lstrip(b"/")[:100]
        if not short.isascii():
            short = short.decode("ascii", "replace").encode("ascii", "replace")[:100]
    else:
        prefix, short = split
    if len(blink) > 100 or not blink.isascii():
        pax.append(_pax_record("linkpath", blink))
        blink = blink[:100] if blink.isascii() else b""
    if size > _MAX_OCTAL_11:
        pax.append(_pax_record("size", str(size).encode()))
    if mtime < 0 or mtime > _MAX_OCTAL_11:
        pax.append(_pax_record("mtime", str(mtime).encode()))
        mtime = 0 if mtime < 0 else _MAX_OCTAL_11
    if devmajor > _MAX_OCTAL_7 or devminor > _MAX_OCTAL_7:
        raise ValueError(f"{name}: device number too large for tar")
    for key in sorted(xattrs or {}):
        pax.append(_pax_record("SCHILY.xattr." + key, (xattrs or {})[key]))
    main = _raw_header(
        short,
        prefix,
        mode & 0o7777,
        min(size, _MAX_OCTAL_11),
        mtime,
        typeflag,
        blink,
        devmajor,
        devminor,
    )
    if not pax:
        return main
    body = b"".join(pax)
    pax_header = _raw_header(
        b"././@PaxHeader", b"", 0o644, len(body), mtime, PAXTYPE, b"", 0, 0
    )
    return pax_header + body + b"\0" * padding(len(body)) + main
