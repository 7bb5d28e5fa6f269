"""The methods the BoDA poster compares, each a `tfcell.training` trainer.

    name        trainer                          hyperparameters (config.loss.<name>)
    erm         ERMTrainer                       -
    dann        DANNTrainer                      lambda, width, depth, schedule
    coral       CORALTrainer (DomainBed CORAL)   weight
    mmd         MMDTrainer (DomainBed MMD)       weight
    boda        BoDATrainer + centroid refresh   nu, temperature, boda_weight,
                                                 macro_weight, start_step,
                                                 feat_update_freq, momentum
    boda_plus   BoDA + class-balanced CE         as boda, and beta
                (the poster's "Ours+"; our reading, see configs/boda_wbc.py)

All share the featurizer (the config's backbone), a linear classifier, the
sampler (24 images per training domain per step, mdlt), the augmentation and
the schedule; the harness selects each by the source domains' validation
macro-F1. CORAL is DomainBed's `mean((mu_a - mu_b)^2) + mean((C_a - C_b)^2)`,
not Deep CORAL's `||C_s - C_t||_F^2 / (4 d^2)`.
"""

import numpy as np

from tfcell import training
from tfcell.experiments import methods

__all__ = ["METHODS", "domain_class_weights"]


def domain_class_weights(domain_class_counts, beta):
    """mdlt's CBLoss weights: per domain, Cui et al.'s effective-number weights of
    that domain's class counts, normalised to sum to the number of classes.

    A class absent from a domain gets weight 0 there (it never occurs), as
    mdlt's `effective_num == 1 -> inf` makes it.
    """
    counts = np.asarray(domain_class_counts, "float64")
    table = np.zeros_like(counts)
    for d, row in enumerate(counts):
        present = row > 0
        if not present.any():
            continue
        effective = 1.0 - np.power(beta, row[present])
        weights = (1.0 - beta) / effective
        table[d, present] = weights / weights.sum() * len(row)
    return table


def _dann(f, c, info, hp):
    return training.DANNTrainer(
        f, c, num_domains=info.num_domains, discriminator_width=int(hp["width"]),
        discriminator_depth=int(hp["depth"]), lambda_schedule=hp["schedule"],
        reversal_factor=float(hp["lambda"]), total_steps=int(hp.get("total_steps", 1000)),
    )  # fmt: skip


def _boda(class_balanced):
    def make(f, c, info, hp):
        counts = np.asarray(info.domain_class_counts, "int64")
        weights = domain_class_weights(counts, hp["beta"]).tolist() if class_balanced else None
        return training.BoDATrainer(
            f, c, counts, nu=hp["nu"], temperature=hp["temperature"],
            boda_weight=hp["boda_weight"], macro_weight=hp["macro_weight"],
            start_step=int(hp["start_step"]), momentum=hp["momentum"], class_weights=weights,
        )  # fmt: skip

    return make


def _refresh(model, data, hp):
    """mdlt's `update_feature_stats`: a full pass over the (unshuffled,
    un-augmented) training part every `feat_update_freq` steps."""
    return [training.BoDACentroidRefresh(data.train_dataset(), every=int(hp["feat_update_freq"]))]


_BODA_HP = ("nu", "temperature", "boda_weight", "macro_weight", "start_step", "feat_update_freq",
            "momentum")  # fmt: skip

METHODS = {
    "erm": methods.TrainerMethod("ERM", lambda f, c, info, hp: training.ERMTrainer(f, c)),
    "dann": methods.TrainerMethod("DANN", _dann, required=("lambda", "width", "depth", "schedule")),
    "coral": methods.TrainerMethod(
        "CORAL",
        lambda f, c, info, hp: training.CORALTrainer(
            f, c, num_domains=info.num_domains, penalty_weight=hp["weight"]
        ),
        required=("weight",),
    ),
    "mmd": methods.TrainerMethod(
        "MMD",
        lambda f, c, info, hp: training.MMDTrainer(
            f, c, num_domains=info.num_domains, penalty_weight=hp["weight"]
        ),
        required=("weight",),
    ),
    "boda": methods.TrainerMethod("BoDA (Ours)", _boda(False), _refresh, required=_BODA_HP),
    "boda_plus": methods.TrainerMethod(
        "BoDA + class-balanced CE (Ours+)", _boda(True), _refresh, required=(*_BODA_HP, "beta")
    ),
}
