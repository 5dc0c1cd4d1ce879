"""The rules `dnsfailover.engine.decide` applies on top of plain health, one module each.

All of them are pure: values in, values out, the clock a parameter.  Each rule that acts
says so in a note (`"capacity: ..."`, `"damping: ..."`, `"interlock: ..."`, `"override: ..."`)
so `explain` and the event history can show why a name answers what it answers.
"""
