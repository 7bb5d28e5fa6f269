"""tfcell evaluation: metrics, calibration, ensembles, repeated-run statistics, figures and
run reports (`results.jsonl`, `report.md`, `done`)."""

from tfcell.evaluation import calibration, ensembles, metrics, plots, report, statistics
from tfcell.evaluation.calibration import *
from tfcell.evaluation.detection import *
from tfcell.evaluation.ensembles import *
from tfcell.evaluation.metrics import *
from tfcell.evaluation.plots import *
from tfcell.evaluation.report import *
from tfcell.evaluation.segmentation import *
from tfcell.evaluation.statistics import *
