"""Where a client is and which regions should answer it: the core of global steering.

Owns: EDNS Client Subnet (RFC 7871) option parsing, source-prefix limits and reply options
(`ecs.py`); the explicit CIDR map that wins over the database (`nets.py`); locating an
address or client subnet in a MaxMind-format database plus that map, with reloads
(`locate.py`); the known country and continent codes (`codes.py`); pure steering rules
that turn a located client into its ordered list of regions, its location group
(`steer.py`); and placing clients per query (`steering.py`) from tables compiled per rule
out of the database's search tree and the map (`table.py`), as gdnsd's plugin_geoip does.
May import: `provider/` and the ground floor (errors), plus `maxminddb` (which reads the
database file: the only I/O here) and `pycountry`.  Nothing above: `config/` imports this
package to validate, `engine/` and `server/` to steer and answer.
"""
