"""Reported experiments that are more than a table cell (each writes into docs/)."""
