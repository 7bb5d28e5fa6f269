"""The compared methods of the AE-CFE study (thesis Sec. 3.4, Tables 3.2-3.3).

    name        representation the random forest (max_depth 16) learns from
    resnet_rf   ResNet-RF: ImageNet ResNet pooled features of the cell image
                (only with `config.model.resnet_weights`, a local file)
    rcnn_rf     R-CNN-RF: the detector's ROI features h_i directly
    ae_rf       AE-RF: latent codes of the two-stage autoencoder, no domain term
                (`AECFETrainer(beta=0)`)
    nd_ae_da    ND-AE-DA: every domain aligned with a reference N(0, I)
                (`alignment="normal"`)
    aae_da      AAE-DA: a discriminator on z behind gradient reversal
                (`alignment="adversarial"`)
    ae_cfe      AE-CFE: the mean + symmetric-KL covariance alignment of every
                target domain with the source (`alignment="domain"`, beta 5)
    ae_rf_z<k>  Table 3.1: AE-RF with a latent code of k (`config.bottleneck.sizes`)
    oracle_cnn  Table 3.3: a supervised CNN trained on the source domain's images
                (no forest), the thesis's "oracle"

Every autoencoder of a run learns from the same cells (the training 80 % of
every domain, no labels) with the same schedule; only the domain term differs.
"""

import keras

from tfcell import models, training
from tfcell.experiments import methods as methods_lib

__all__ = [
    "AUTOENCODER",
    "DETECTOR",
    "ForestMethod",
    "METHODS",
    "ORACLE",
    "OracleMethod",
    "RESNET",
    "TABLE_METHODS",
    "build_autoencoder",
    "build_oracle",
    "run_methods",
]

DETECTOR, RESNET, AUTOENCODER, ORACLE = "detector", "resnet", "autoencoder", "oracle"
# Table 3.2's columns, in the thesis's order.
TABLE_METHODS = ("resnet_rf", "rcnn_rf", "ae_rf", "nd_ae_da", "aae_da", "ae_cfe")


class ForestMethod(methods_lib.Method):
    """A random forest on one representation (`DETECTOR`, `RESNET`, `AUTOENCODER`)."""

    batches = "features"

    def __init__(self, title, representation):
        super().__init__(title)
        if representation not in (DETECTOR, RESNET, AUTOENCODER):
            raise ValueError(f"Unknown representation {representation!r}.")
        self.representation = representation


class OracleMethod(methods_lib.Method):
    """The supervised CNN of Table 3.3, trained on the source domain's images."""

    batches = "tuple"
    representation = ORACLE


METHODS = {
    "resnet_rf": ForestMethod("ResNet-RF", RESNET),
    "rcnn_rf": ForestMethod("R-CNN-RF", DETECTOR),
    "ae_rf": ForestMethod("AE-RF", AUTOENCODER),
    "nd_ae_da": ForestMethod("ND-AE-DA", AUTOENCODER),
    "aae_da": ForestMethod("AAE-DA", AUTOENCODER),
    "ae_cfe": ForestMethod("AE-CFE", AUTOENCODER),
    "oracle_cnn": OracleMethod("CNN oracle"),
}


def run_methods(config):
    """`{name: method}` of the run, in table order, and `{name: reason}` of the
    methods left out (ResNet-RF without a local weight file)."""
    names = list(config.methods)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"Unknown AE-CFE method(s) {unknown}; known: {sorted(METHODS)}.")
    skipped = {}
    if "resnet_rf" in names and not config.model.get("resnet_weights"):
        names.remove("resnet_rf")
        skipped["resnet_rf"] = (
            "not run: no ImageNet weights offline (--config.model.resnet_weights)"
        )
    out = {n: METHODS[n] for n in names}
    for size in config.bottleneck.sizes:
        if int(size) != int(config.model.latent_dim) or "ae_rf" not in out:
            out[f"ae_rf_z{int(size)}"] = ForestMethod(f"AE-RF, latent {int(size)}", AUTOENCODER)
    return out, skipped


def build_autoencoder(hp, config, feature_shape, num_domains, source_index):
    """A compiled `tfcell.training.AECFETrainer` for one autoencoder method.

    Args:
        hp: `{"beta", "alignment", "latent_dim"}` (the config's loss section).
        config: the run's config (`model.reconstruction_size`,
            `autoencoder.discriminator_width`, `optimizer.learning_rate`).
        feature_shape: `(C,)` pooled ROI features or `(14, 14, C)` maps.
        num_domains: every domain of the run (targets included).
        source_index: the id of the reference domain of Eq. 2.14.
    """
    autoencoder = models.aecfe_autoencoder(
        feature_shape=tuple(feature_shape), latent_dim=int(hp["latent_dim"]),
        image_size=int(config.model.reconstruction_size),
    )  # fmt: skip
    trainer = training.AECFETrainer(
        autoencoder, num_domains=int(num_domains), beta=float(hp["beta"]),
        source_domain=int(source_index), alignment=hp["alignment"],
        discriminator_width=int(config.autoencoder.discriminator_width),
    )  # fmt: skip
    trainer.compile(optimizer=keras.optimizers.Adam(float(config.optimizer.learning_rate)))
    return trainer


def build_oracle(config, image_shape, num_classes):
    """A compiled supervised CNN (`small_cnn` + softmax head, logits out)."""
    inputs = keras.Input(image_shape, name="image")
    backbone = models.small_cnn(image_shape, widths=tuple(config.oracle.widths))
    logits = keras.layers.Dense(num_classes, name="logits")(backbone(inputs))
    model = keras.Model(inputs, logits, name="oracle_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(float(config.oracle.learning_rate)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
