"""The `dnsfailover` command: every subcommand and every `print` of dnsfailover.

Owns: the parser (`main.py`), the operator commands over the API (`ops.py`, `client.py`),
`drill`, `simulate` and `demo`, and the exit codes (`args.py`).
May import: everything.  Nothing imports it.
"""
