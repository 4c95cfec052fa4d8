"""TLS records and handshake metadata as a sans-IO parser (RFC 5246, 8446).

INTERFACE (implemented by the TLS dissector work):

    p = TlsParser()
    events = p.receive("C", data, offset)  # bytes of one direction, offset of data[0]
    events = p.gap("S", offset, length)    # bytes missing from the capture
    events = p.close("C")                  # that direction ended
    p.progress                             # stage each direction reached, app-data counts

One parser per TCP connection (both directions), because what a record means
depends on the other side: after a TLS 1.3 ServerHello everything is
encrypted and the handshake's progress can only be inferred from the pattern.

Every event is a dataclass with ``direction``, ``start`` and ``end`` (stream
offsets) and a ``summary()`` method giving one display line of at most 80
characters.  Nothing here raises on bad input: a malformed record becomes an
event, and a record claiming 16 MB is neither buffered nor allocated.
"""
