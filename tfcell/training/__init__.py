"""tfcell.training."""
