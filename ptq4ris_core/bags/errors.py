"""The one error a bag command raises for a bag it cannot use."""
from ..errors import InputError


class BagError(InputError):
    """A missing, corrupt or unusable bag; the message says which and what to do."""
