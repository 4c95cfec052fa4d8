"""pcapsmtp: where and why SMTP sessions died, read from packet captures."""

__version__ = "0.1.0"
