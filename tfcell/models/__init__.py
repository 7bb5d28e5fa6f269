"""tfcell.models."""
