"""CORAL and MMD trainers: cross-entropy plus a domain alignment penalty.

The penalty is a batch statistic averaged over the pairs of domains present in
the batch (`tfcell.losses.pairwise_domain_penalty`); the base `Trainer` divides
it by the replica count, so under `MirroredStrategy` the update uses the mean
of the per-replica penalties.
"""

import keras

from tfcell.losses import alignment
from tfcell.training import erm

__all__ = ["CORALTrainer", "MMDTrainer"]


class _AlignmentTrainer(erm.Trainer):
    """CE + `penalty_weight * mean over present domain pairs of penalty_fn`."""

    penalty_names = ("penalty",)
    # A domain takes part in a pair with at least this many rows in the batch.
    min_samples = 1

    def __init__(self, featurizer, classifier, num_domains, penalty_weight=1.0, **kwargs):
        super().__init__(featurizer, classifier, **kwargs)
        if not isinstance(num_domains, int) or num_domains < 1:
            raise ValueError(f"`num_domains` must be a positive int, received {num_domains!r}.")
        if penalty_weight < 0:
            raise ValueError(
                f"`penalty_weight` must be >= 0 (paper default 1.0), received {penalty_weight}."
            )
        self.num_domains = num_domains
        self.penalty_weight = float(penalty_weight)

    def penalty_fn(self, x_a, x_b, mask_a=None, mask_b=None):
        raise NotImplementedError

    def batch_penalties(self, batch, features, logits):
        penalty = alignment.pairwise_domain_penalty(
            features,
            batch["domain"],
            self.num_domains,
            penalty_fn=self.penalty_fn,
            min_samples=self.min_samples,
        )
        return {"penalty": self.penalty_weight * penalty}

    def get_config(self):
        config = super().get_config()
        config.update({"num_domains": self.num_domains, "penalty_weight": self.penalty_weight})
        return config


@keras.saving.register_keras_serializable(package="tfcell")
class CORALTrainer(_AlignmentTrainer):
    """Deep CORAL as DomainBed runs it: CE plus the CORAL penalty between domains.

    ```
    loss = mean(CE) + penalty_weight * mean over domain pairs (a, b) present of
           mean((mean_a - mean_b) ** 2) + mean((cov_a - cov_b) ** 2)
    ```

    Args:
        featurizer: a built `keras.Model` mapping images to features.
        classifier: a built `keras.Model` mapping features to class logits.
        num_domains: int, the number of training domains.
        penalty_weight: float, DomainBed's `mmd_gamma`. Default 1.0.
        **kwargs: forwarded to `keras.Model`.

    Note:
        The penalty is DomainBed's CORAL (`tfcell.losses.coral`), not Deep
        CORAL's `/(4 d^2)` form. DomainBed averages the per-domain CE over
        equal per-domain minibatches; here CE is the mean over the whole
        (mixed) batch, the same when the pipeline balances the domains. A
        domain with fewer than 2 samples in the batch is left out of the
        pairs (its unbiased covariance is undefined).

    Reference:
    - [Sun & Saenko, 2016](https://arxiv.org/abs/1607.01719); DomainBed
      @b93c22a, `domainbed/algorithms.py`, `CORAL`
    """

    min_samples = 2

    def penalty_fn(self, x_a, x_b, mask_a=None, mask_b=None):
        return alignment.coral(x_a, x_b, mask_a=mask_a, mask_b=mask_b)


@keras.saving.register_keras_serializable(package="tfcell")
class MMDTrainer(_AlignmentTrainer):
    """CE plus the Gaussian-kernel MMD between domains (DomainBed's `MMD`).

    ```
    loss = mean(CE) + penalty_weight * mean over domain pairs (a, b) present of
           mmd(z_a, z_b, gammas=(1e-3, 1e-2, 1e-1, 1, 10, 100, 1000))
    ```

    Args:
        featurizer: a built `keras.Model` mapping images to features.
        classifier: a built `keras.Model` mapping features to class logits.
        num_domains: int, the number of training domains.
        penalty_weight: float, DomainBed's `mmd_gamma`. Default 1.0.
        **kwargs: forwarded to `keras.Model`.

    Note:
        CE is the mean over the mixed batch (DomainBed: the mean of the
        per-domain means; equal with balanced batches).

    Reference:
    - [Li et al., 2018](https://openaccess.thecvf.com/content_cvpr_2018/html/Li_Domain_Generalization_With_CVPR_2018_paper.html);
      DomainBed @b93c22a, `domainbed/algorithms.py`, `MMD`
    """

    def penalty_fn(self, x_a, x_b, mask_a=None, mask_b=None):
        return alignment.mmd(x_a, x_b, mask_a=mask_a, mask_b=mask_b)
