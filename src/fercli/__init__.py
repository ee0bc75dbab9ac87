"""fercli: facial expression recognition on FER2013-style data, from the command line."""

__version__ = "0.1.0"
