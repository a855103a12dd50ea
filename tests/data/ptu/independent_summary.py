#!/usr/bin/env python3
"""Independent summary of the PTU (T2) files in this folder, for comparison with
`qkd tags inspect FILE --json`.

Each file is summarised twice, by two independent decoders, and the two must agree:
  1. ptufile (PyPI, by Christoph Gohlke): header tags, record count, resolution,
     overflow-corrected times and channels from PtuFile.decode_records().
  2. plain `struct` decoding of the header tags and of every 32-bit record.

Field meanings follow qkd's reader (drivers/src/ptu/records.rs, controller/src/tags.rs):
  channels        photon records per raw channel field of the record (HydraHarp-family
                  T2: field 0..62, i.e. counted from 0), sync records NOT included;
  sync_events     special records with channel field 0 (T2 sync);
  markers         special records with channel field 1..15;
  overflow_records special records with channel field 63;
  first_ps/last_ps arrival time of the first/last photon record (not sync), absolute,
                  overflow-corrected, in ps.
ptufile's decode_records() gives sync records channel 0, the same as photons on field 0,
so they are separated here by looking at the raw record (bit 31 set, field 0).

Usage: python3 independent_summary.py [FILE.ptu ...]   (default: every *.ptu here);
writes expected.json beside this script.
"""

import json
import pathlib
import struct
import sys

import numpy
import ptufile

HERE = pathlib.Path(__file__).resolve().parent
# Overflow period (time units per wrap) of the T2 record types handled here.
WRAP = {0x00010203: 210698240, 0x00010204: 33552000}
GENERIC_T2 = {0x01010204, 0x00010205, 0x00010206, 0x00010207}


def ps(units, res_ps):
    """Time units to ps, exactly when the unit is a whole number of ps (as qkd does)."""
    whole = round(res_ps)
    if whole >= 1 and abs(res_ps - whole) <= 1e-6 * res_ps:
        return int(units) * whole
    return int(round(int(units) * res_ps))


def with_struct(path):
    """Decode header and records with nothing but `struct`."""
    data = path.read_bytes()
    assert data[:8] == b"PQTTTR\0\0", "not a PTU file"
    tags, pos = {}, 16
    while True:  # 48-byte tags: name[32], index i32, type u32, value 8 bytes
        name = data[pos:pos + 32].split(b"\0")[0].decode()
        typ, = struct.unpack_from("<I", data, pos + 36)
        raw = data[pos + 40:pos + 48]
        pos += 48
        if typ == 0x20000008:  # Float8
            tags[name] = struct.unpack("<d", raw)[0]
        else:
            tags[name] = struct.unpack("<q", raw)[0]
        if typ & 0xFFFF == 0xFFFF:  # variable-length payload follows: skip it
            pos += tags[name]
        if name == "Header_End":
            break
    rectype = tags["TTResultFormat_TTTRRecType"]
    res_ps = tags["MeasDesc_GlobalResolution"] * 1e12
    s = dict(channels={}, sync_events=0, markers=0, overflow_records=0,
             unknown_special_records=0, first_ps=None, last_ps=None)
    overflow = 0

    def photon(field, time):
        t = ps(overflow + time, res_ps)
        s["channels"][str(field)] = s["channels"].get(str(field), 0) + 1
        s["first_ps"] = t if s["first_ps"] is None else s["first_ps"]
        s["last_ps"] = t

    body = data[pos:]
    assert len(body) % 4 == 0, "trailing partial record"
    for (r,) in struct.iter_unpack("<I", body):
        if rectype == 0x00010203:  # PicoHarp 300 T2: chan 4 | time 28
            chan, time = r >> 28, r & 0x0FFFFFFF
            if chan != 15:
                photon(chan, time)
            elif r & 0xF == 0:
                s["overflow_records"] += 1
                overflow += WRAP[rectype]
            else:
                s["markers"] += 1
            continue
        if rectype != 0x00010204 and rectype not in GENERIC_T2:
            raise SystemExit(f"{path.name}: record type 0x{rectype:08X} not handled")
        special, chan, time = r >> 31, (r >> 25) & 0x3F, r & 0x1FFFFFF
        if not special:
            photon(chan, time)
        elif chan == 63:  # overflow; generic types carry a wrap count (0 means 1)
            s["overflow_records"] += 1
            if rectype == 0x00010204:
                overflow += WRAP[rectype]
            else:
                overflow += (time or 1) << 25
        elif chan == 0:
            s["sync_events"] += 1
        elif 1 <= chan <= 15:
            s["markers"] += 1
        else:
            s["unknown_special_records"] += 1
    s.update(record_type=f"0x{rectype:08X}", mode="T2", records=len(body) // 4,
             declared_records=tags.get("TTResult_NumberOfRecords"),
             resolution_ps=round(res_ps * 1e3) / 1e3)
    return s


def with_ptufile(path):
    """The same figures from ptufile's own header parsing and record decoding."""
    with ptufile.PtuFile(path) as p:
        assert not p.is_t3, "only T2 files are handled"
        rectype = int(p.tags["TTResultFormat_TTTRRecType"])
        res_ps = p.global_resolution * 1e12
        raw = p.read_records()
        dec = p.decode_records()
        declared = int(p.tags["TTResult_NumberOfRecords"])
    chan, marker = dec["channel"].astype(int), dec["marker"].astype(int)
    if rectype == 0x00010203:
        sync = numpy.zeros(raw.size, bool)  # PicoHarp T2: channel 0 *is* a photon input
    else:  # ptufile gives syncs channel 0 too: separate them by the raw record
        sync = ((raw >> 31) == 1) & (((raw >> 25) & 0x3F) == 0)
    is_photon = (chan >= 0) & ~sync
    fields, counts = numpy.unique(chan[is_photon], return_counts=True)
    times = dec["time"][is_photon]
    return dict(
        record_type=f"0x{rectype:08X}", mode="T2", records=int(raw.size),
        declared_records=declared,
        resolution_ps=round(res_ps * 1e3) / 1e3,
        channels={str(int(f)): int(n) for f, n in zip(fields, counts)},
        sync_events=int(sync.sum()),
        markers=int(((chan < 0) & (marker > 0)).sum()),
        overflow_records=int(((chan < 0) & (marker == 0)).sum()),
        first_ps=ps(times[0], res_ps) if times.size else None,
        last_ps=ps(times[-1], res_ps) if times.size else None,
    )


def main():
    files = [pathlib.Path(a) for a in sys.argv[1:]] or sorted(HERE.glob("*.ptu"))
    out = {}
    for path in files:
        a, b = with_ptufile(path), with_struct(path)
        # ptufile has no notion of unknown special records: require there are none
        assert b.pop("unknown_special_records") == 0, path.name
        if a != b:
            raise SystemExit(f"{path.name}: ptufile and struct disagree:\n{a}\n{b}")
        a["source"] = f"ptufile {ptufile.__version__} (and plain struct decoding)"
        out[path.name] = a
        print(path.name, json.dumps(a))
    (HERE / "expected.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
