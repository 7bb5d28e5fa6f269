"""tfcell.evaluation."""
