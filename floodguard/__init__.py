"""floodguard: keeps SIP registrars alive under registration floods and brute force."""

__version__ = "0.1.0"
