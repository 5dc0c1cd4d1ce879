"""Bring existing DNS in: a zone from a BIND zone file, an AXFR or a Route 53 hosted zone,
turned into the `records:` of a config (`dnsfailover import`).

`zone` turns record sets (from any source) into an `ImportedZone`, setting apart, each with
its reason, what a config cannot express; `sources` reads zone files and AXFRs with dnspython;
`route53` lists a hosted zone with boto3; `emit` writes the YAML and checks it with the
same loader as `dnsfailover validate`.
"""
