"""The provider contract, the plugin SDK with the ground floor: what a provider implements
and the shared parts every external provider uses.

Owns: the contract and entry-point loading (`contract.py`), plans and the diff (`plan.py`),
the ownership markers, reserved-name guard and CNAME rule (`ownership.py`), the retry loop
(`retry.py`), and the per-zone sync worker (`sync.py`).
May import: the ground floor only.  The provider distributions import only this and the
ground floor (checked in CI).
"""
