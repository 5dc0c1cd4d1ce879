"""The config: YAML in, a frozen validated `Config` out, or every problem as file:line.

Owns: the loader (`load.py`), the schema (`schema.py`) and one module per section
(`checks`, `policy`, `cluster`, `drills`, `api`, `alerts`, `dnssec`), the mapping of
validation errors to YAML positions (`problems.py`, `yamlpos.py`), drill targets, secret
reading (`secrets.py`: TSIG secrets and the API token, never logged), and the settings that
need an optional extra installed (`extras.py`: `cluster:`, SNS).
May import: `provider/` (to validate a zone's provider options), `dnssec/` (to judge a
zone's `dnssec: key_files` with the loader the signer uses) and the ground floor.  No
event loop, socket, database or network client (checked in CI).
"""
