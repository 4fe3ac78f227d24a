"""Scale-out: independent tasks (table cells, bags) here or on a Ray cluster."""
