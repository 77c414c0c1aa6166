"""One exception type for bad user input: the CLI prints its message on one line and exits with code 2."""


class NfkitError(Exception):
    """Bad input (a file, an argument). The message names the file or argument and what was expected."""


class DatasetError(NfkitError):
    """A dataset on disk is missing, unreadable or malformed."""


class FieldFileError(NfkitError):
    """A field file is missing, truncated, not a field, or of an unsupported format version."""


class SplitNotFound(DatasetError):
    """The dataset is readable but has no frames for the requested split (e.g. no held-out views)."""
