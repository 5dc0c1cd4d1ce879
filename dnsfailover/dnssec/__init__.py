"""DNSSEC for embedded zones: keys, signatures and the denial-of-existence chain.

Owns: signing keys in BIND's file format (`keys.py`: generated into the state directory on
first need, or loaded from `dnssec-keygen` output, private material never in a log, an
error or a repr), the signer (`sign.py`: DNSKEY, an RRSIG per RRset with a back-dated
inception and a jittered expiry, the refresh rule, a whole-zone sign) and the NSEC / NSEC3
chain of a zone's names (`denial.py`).  Everything here is a pure function of dnspython
values and a clock given as a parameter, except `keys.py`'s file reading and writing.
May import: the ground floor (`model`, `errors`), dnspython and `cryptography`; not
`config/` (the config imports this package to judge key files with the loader the server
uses), and nothing above it.
"""
