"""dnsfailover: DNS-based global failover.

The top level is the ground floor: `errors`, `model`, `fields`, `rdata`, `backoff`,
`tasks`, `logs` — values and helpers that import nothing above them.  Each stage of the data
flow is one package (`config`, `checks`, `health`, `engine`, `provider`, `server`,
`runtime`, `api`, `drills`, `cluster`, `alerts`, `cli`); each package's docstring says
what it owns and what it may import, and `lint-imports` checks it.
"""

__version__ = "0.1.0"
