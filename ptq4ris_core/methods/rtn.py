"""RTN: round to nearest with min-max ranges, no search (the floor every method must beat)."""
from .base import Method, register


@register
class RTN(Method):
    name = "rtn"

    def quantizers_for(self, info, s):
        return self.plain(info, s, act="minmax", wt="minmax")
