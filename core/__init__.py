"""The ground floor every package may import: typed configuration and its errors
(``core.config``), the clock and id generators (``core.clock``, ``core.ids``), ISO
timestamps (``core.timefmt``) and the domain errors that name CONTRACT 1's codes
(``core.errors``). It imports nothing of the product's, so it can sit under everything.
"""
