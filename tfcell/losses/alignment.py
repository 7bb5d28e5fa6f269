"""Domain alignment penalties: CORAL, MMD (DomainBed) and the AE-CFE domain loss.

These are batch statistics (one number per pair of domains), so they are plain
functions of tensors, applied in a trainer's `train_step` (which divides them
by the number of replicas) and never as a `keras.losses.Loss` returning one
scalar (see HOUSE_STYLE.md on MirroredStrategy scaling).

Every penalty takes optional 0/1 row masks (`mask_a`, `mask_b`): the statistics
of `x_a` are then those of the rows where `mask_a == 1`. This is how
`pairwise_domain_penalty` picks the rows of each domain with static shapes (no
`boolean_mask`, so `fit` with an unknown batch size and XLA both work).
"""

import itertools

from keras import ops

__all__ = [
    "coral",
    "mmd",
    "aecfe_domain_loss",
    "aecfe_multi_domain_loss",
    "pairwise_domain_penalty",
    "DEFAULT_MMD_GAMMAS",
]

# DomainBed @b93c22a, algorithms.AbstractMMD.__init__ (gaussian=True).
DEFAULT_MMD_GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def _rows(x, mask):
    """Returns `(x, mask (N, 1), n)` with `mask` all ones when it is None."""
    x = ops.convert_to_tensor(x)
    if mask is None:
        mask = ops.ones_like(x[:, :1])
    else:
        mask = ops.reshape(ops.cast(mask, x.dtype), (-1, 1))
    return x, mask, ops.sum(mask)


def _mean_and_cov(x, mask):
    """Masked mean `(1, D)` and unbiased covariance `(D, D)` (over n - 1).

    The divisors are clamped at 1: with no row the mean is 0, with one row the
    centred rows are all 0 so the covariance is 0 (torch gives NaN there).
    """
    x, mask, n = _rows(x, mask)
    mean = ops.sum(x * mask, axis=0, keepdims=True) / ops.maximum(n, 1.0)
    centred = (x - mean) * mask
    cov = ops.matmul(ops.transpose(centred), centred) / ops.maximum(n - 1.0, 1.0)
    return mean, cov


def coral(x_a, x_b, mask_a=None, mask_b=None):
    """CORAL penalty between two sets of features, as DomainBed computes it.

    Matches the first and second moments of two feature sets: the mean squared
    difference of the means plus the mean squared difference of the
    (unbiased) covariance matrices.

    ```
    mean_a, mean_b = x_a.mean(0), x_b.mean(0)
    cov_a = (x_a - mean_a).T @ (x_a - mean_a) / (n_a - 1)   # same for b
    coral = mean((mean_a - mean_b) ** 2) + mean((cov_a - cov_b) ** 2)
    ```

    Args:
        x_a: features `(N_a, D)` of the first domain.
        x_b: features `(N_b, D)` of the second domain.
        mask_a: optional 0/1 row mask `(N_a,)` selecting the rows of `x_a`.
        mask_b: optional 0/1 row mask `(N_b,)` selecting the rows of `x_b`.

    Returns:
        A scalar tensor.

    Note:
        This is DomainBed's CORAL (the mean over the D x D entries, no
        `1 / (4 d^2)`), not Deep CORAL's `||C_a - C_b||_F^2 / (4 d^2)`; the two
        differ by a constant factor 1/4 on the covariance term and by the
        mean term, which Deep CORAL lacks. BoDA's "macro alignment" is this
        same function.

    Note:
        The divisors `n` and `n - 1` are clamped at 1, so a set with one row
        has covariance 0 and an empty set has mean 0 (finite values and
        gradients); DomainBed divides by zero there and returns NaN.

    Reference:
    - [Sun & Saenko, 2016](https://arxiv.org/abs/1607.01719) (Deep CORAL)
    - DomainBed @b93c22a, `domainbed/algorithms.py`, `AbstractMMD.mmd`
      (`gaussian=False` branch)
    """
    mean_a, cov_a = _mean_and_cov(x_a, mask_a)
    mean_b, cov_b = _mean_and_cov(x_b, mask_b)
    mean_diff = ops.mean(ops.square(mean_a - mean_b))
    cov_diff = ops.mean(ops.square(cov_a - cov_b))
    return mean_diff + cov_diff


def _squared_distances(x, y):
    """DomainBed's `my_cdist`: `|x|^2 + |y|^2 - 2 x.y`, clamped at 1e-30."""
    x_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    y_norm = ops.sum(ops.square(y), axis=-1, keepdims=True)
    d = x_norm + ops.transpose(y_norm) - 2.0 * ops.matmul(x, ops.transpose(y))
    return ops.maximum(d, 1e-30)


def _gaussian_kernel(x, y, gammas):
    d = _squared_distances(x, y)
    return sum(ops.exp(-float(g) * d) for g in gammas)


def mmd(x_a, x_b, gammas=DEFAULT_MMD_GAMMAS, mask_a=None, mask_b=None):
    """Maximum mean discrepancy with a sum of Gaussian kernels (DomainBed).

    The biased (V-statistic) estimator: the diagonal terms are kept.

    ```
    d(x, y) = max(|x|^2 + |y|^2 - 2 x.y, 1e-30)          # squared distance
    k(x, y) = sum(exp(-g * d(x, y)) for g in gammas)
    mmd = mean(k(x_a, x_a)) + mean(k(x_b, x_b)) - 2 * mean(k(x_a, x_b))
    ```

    Args:
        x_a: features `(N_a, D)` of the first domain.
        x_b: features `(N_b, D)` of the second domain.
        gammas: kernel bandwidths (multipliers of the squared distance).
            Default `(1e-3, 1e-2, 1e-1, 1, 10, 100, 1000)`, DomainBed's.
        mask_a: optional 0/1 row mask `(N_a,)` selecting the rows of `x_a`.
        mask_b: optional 0/1 row mask `(N_b,)` selecting the rows of `x_b`.

    Returns:
        A scalar tensor.

    Note:
        The masked means divide by `max(n, 1)`: an empty set gives finite
        (meaningless) values, so callers must mask such pairs out, as
        `pairwise_domain_penalty` does.

    Reference:
    - [Gretton et al., 2012](https://jmlr.org/papers/v13/gretton12a.html)
    - DomainBed @b93c22a, `domainbed/algorithms.py`, `AbstractMMD`
      (`my_cdist`, `gaussian_kernel`, `mmd`)
    """
    if not gammas:
        raise ValueError(
            f"`gammas` must name at least one kernel bandwidth, received {gammas!r}. "
            "Use e.g. tfcell.losses.DEFAULT_MMD_GAMMAS."
        )
    x_a, m_a, n_a = _rows(x_a, mask_a)
    x_b, m_b, n_b = _rows(x_b, mask_b)
    n_a = ops.maximum(n_a, 1.0)
    n_b = ops.maximum(n_b, 1.0)

    def masked_mean(k, m_x, m_y, n_x, n_y):
        return ops.sum(k * m_x * ops.transpose(m_y)) / (n_x * n_y)

    k_aa = masked_mean(_gaussian_kernel(x_a, x_a, gammas), m_a, m_a, n_a, n_a)
    k_bb = masked_mean(_gaussian_kernel(x_b, x_b, gammas), m_b, m_b, n_b, n_b)
    k_ab = masked_mean(_gaussian_kernel(x_a, x_b, gammas), m_a, m_b, n_a, n_b)
    return k_aa + k_bb - 2.0 * k_ab


def aecfe_domain_loss(z_source, z_target, mask_a=None, mask_b=None):
    """AE-CFE domain loss between a source and one target domain.

    Mean squared error between the domain means plus the symmetric KL
    divergence between the softmaxed covariance matrices of the latent codes.

    ```
    mu_0, mu_k = z_source.mean(0), z_target.mean(0)
    P_0 = softmax(cov(z_source), axis=-1)        # unbiased covariance, (D, D)
    P_k = softmax(cov(z_target), axis=-1)
    kl(p, q) = mean(p * (log p - log q))          # over all D x D entries
    loss = mean((mu_k - mu_0) ** 2) + 0.5 * (kl(P_0, P_k) + kl(P_k, P_0))
    ```

    Args:
        z_source: latent codes `(N_0, D)` of the source (reference) domain.
        z_target: latent codes `(N_k, D)` of a target domain.
        mask_a: optional 0/1 row mask `(N_0,)` of `z_source`.
        mask_b: optional 0/1 row mask `(N_k,)` of `z_target`.

    Returns:
        A scalar tensor.

    Note:
        The authors' code (`MMD_Loss.py`) softmaxes over `dim=0` (columns);
        the covariance is symmetric, so that is the transpose of the row
        softmax used here and the entry-averaged KL is the same. `nn.KLDivLoss`
        with its default reduction averages over all D x D entries, as here.
        The thesis calls this loss "MMD"; it is not a kernel MMD.

    Note:
        One row gives a zero covariance (the `n - 1` divisor is clamped at 1)
        where `torch.cov` gives NaN.

    Reference:
    - [Salehi et al., 2022](https://arxiv.org/abs/2208.11431), Eq. 2.14 of
      the thesis; marrlab/AE-CFE @45785e2, `MMD_Loss.py`
    """
    mean_0, cov_0 = _mean_and_cov(z_source, mask_a)
    mean_k, cov_k = _mean_and_cov(z_target, mask_b)
    mean_term = ops.mean(ops.square(mean_k - mean_0))
    log_p0 = ops.log_softmax(cov_0, axis=-1)
    log_pk = ops.log_softmax(cov_k, axis=-1)
    kl_0k = ops.mean(ops.exp(log_p0) * (log_p0 - log_pk))
    kl_k0 = ops.mean(ops.exp(log_pk) * (log_pk - log_p0))
    return mean_term + 0.5 * (kl_0k + kl_k0)


def aecfe_multi_domain_loss(features, domains, num_domains, source_domain=0):
    """AE-CFE domain loss summed over the target domains present in the batch.

    ```
    L_DA = sum(aecfe_domain_loss(z[d == source], z[d == k])
               for k != source if k present)        # 0 if the source is absent
    ```

    Args:
        features: latent codes `(N, D)`.
        domains: integer domain ids `(N,)`.
        num_domains: int, the number of domains K (static).
        source_domain: int, the reference domain 0 of Eq. 2.14. Default 0.

    Returns:
        A scalar tensor (a sum, as the authors' `loss1 + loss2`).

    Reference:
    - marrlab/AE-CFE @45785e2, `MMD_Loss.py` (`calculate_mmd`), `train.py`
    """
    _check_num_domains(num_domains)
    if not 0 <= int(source_domain) < int(num_domains):
        raise ValueError(
            f"`source_domain` must lie in [0, num_domains={num_domains}), received {source_domain}."
        )
    features = ops.convert_to_tensor(features)
    domains = ops.reshape(ops.cast(domains, "int32"), (-1,))
    masks = [ops.cast(ops.equal(domains, k), features.dtype) for k in range(num_domains)]
    present = [ops.cast(ops.sum(m) > 0, features.dtype) for m in masks]
    total = ops.zeros((), features.dtype)
    for k in range(num_domains):
        if k == source_domain:
            continue
        term = aecfe_domain_loss(features, features, mask_a=masks[source_domain], mask_b=masks[k])
        total = total + present[source_domain] * present[k] * term
    return total


def _check_num_domains(num_domains):
    if not isinstance(num_domains, int) or num_domains < 1:
        raise ValueError(
            f"`num_domains` must be a positive Python int (it sets the static "
            f"loop over domain pairs), received {num_domains!r}."
        )


def pairwise_domain_penalty(features, domains, num_domains, penalty_fn=coral, min_samples=1):
    """Averages a two-domain penalty over all pairs of domains present in a batch.

    ```
    pairs = [(a, b) for a < b if count(a) >= min_samples and count(b) >= min_samples]
    penalty = sum(penalty_fn(z[d == a], z[d == b]) for a, b in pairs) / max(len(pairs), 1)
    ```

    The rows of each domain are selected with masks, so the shapes stay
    static; a pair with an absent domain is multiplied by 0 and left out of
    the count (and every penalty here is finite on empty or one-row sets, so
    no `0 * NaN`). With fewer than two domains present the penalty is 0.

    Args:
        features: features `(N, D)`.
        domains: integer domain ids `(N,)` (or `(N, 1)`), in `[0, num_domains)`.
        num_domains: int, the number of domains K; the loop over the
            `K (K - 1) / 2` pairs is unrolled in the graph.
        penalty_fn: a callable `fn(x_a, x_b, mask_a=..., mask_b=...)` returning
            a scalar, e.g. `tfcell.losses.coral` (default), `tfcell.losses.mmd`
            or `tfcell.losses.aecfe_domain_loss`; the masks are passed by
            keyword.
        min_samples: int, a domain counts as present with at least this many
            rows in the batch. Default 1; 2 makes the unbiased covariance of
            CORAL defined for every pair used.

    Returns:
        A scalar tensor.

    Reference:
    - DomainBed @b93c22a, `domainbed/algorithms.py`, `AbstractMMD.update`
      (`penalty /= nmb * (nmb - 1) / 2`)
    """
    _check_num_domains(num_domains)
    features = ops.convert_to_tensor(features)
    domains = ops.reshape(ops.cast(domains, "int32"), (-1,))
    masks = [ops.cast(ops.equal(domains, k), features.dtype) for k in range(num_domains)]
    present = [ops.cast(ops.sum(m) >= float(min_samples), features.dtype) for m in masks]
    total = ops.zeros((), features.dtype)
    num_pairs = ops.zeros((), features.dtype)
    for a, b in itertools.combinations(range(num_domains), 2):
        weight = present[a] * present[b]
        total = total + weight * penalty_fn(features, features, mask_a=masks[a], mask_b=masks[b])
        num_pairs = num_pairs + weight
    return total / ops.maximum(num_pairs, 1.0)
