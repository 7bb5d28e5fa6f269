"""tfcell experiments: how a paper's comparison runs (methods, data settings,
training loop, ensembles, sweeps, reports), shared by the scripts in
`reproductions/`."""

from tfcell.experiments import cfal_report, data, methods, runner, script, sweep
