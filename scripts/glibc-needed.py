#!/usr/bin/env python3
"""Prints the glibc symbol versions an ELF binary needs, one per line, lowest first.

Reads the dynamic linker's own list (the SHT_GNU_verneed section: for each shared library, the versions the
binary was linked against), as `readelf -V` shows it, without needing binutils. A static binary (no verneed
section) prints nothing. Used by scripts/package-functions.sh:

    scripts/glibc-needed.py dist/functions/milink        # GLIBC_2.2.5 ... GLIBC_2.28
"""
import struct
import sys

SHT_GNU_VERNEED = 0x6FFFFFFE


def glibc_versions(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"{path}: not a 64-bit little-endian ELF file")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    versions = set()
    for _name, sh_type, _flags, _addr, offset, _size, link, info, _align, _entsize in sections:
        if sh_type != SHT_GNU_VERNEED:
            continue
        strtab = sections[link][4]

        def string(at):
            end = data.index(b"\0", strtab + at)
            return data[strtab + at:end].decode()

        entry = offset
        for _ in range(info):  # sh_info = number of Verneed entries
            _version, cnt, _file, aux, next_entry = struct.unpack_from("<HHIII", data, entry)
            at = entry + aux
            for _ in range(cnt):
                _hash, _flags, _other, name, next_aux = struct.unpack_from("<IHHII", data, at)
                if string(name).startswith("GLIBC_"):
                    versions.add(string(name))
                at += next_aux
            entry += next_entry
    return sorted(versions, key=lambda v: [int(p) if p.isdigit() else 0 for p in v[6:].split(".")])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: glibc-needed.py <elf binary>")
    for version in glibc_versions(sys.argv[1]):
        print(version)
