"""Protocol dissectors: sans-IO parsers, bytes in and events out.

They know SMTP and TLS, not captures: no files, sockets, clocks or printing.
Every event carries stream offsets (``start``/``end``) in the direction it was
seen; the caller maps offsets back to frames and times.
"""
