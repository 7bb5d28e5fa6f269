"""CFAL on Kather colorectal cancer (CRC) tissue with VGG19.

Mahbub et al., "Center-Focused Affinity Loss for Class Imbalance Histology Image
Classification", IEEE JBHI 28(2), 2024: Tables V, VI, IX, X, XII, XIII, XIV,
Figs. 5, 7.

    python reproductions/cfal_crc.py           # synthetic stand-in, a few minutes
    python reproductions/cfal_crc.py --config.data.root=/data/kather   # paper
    python reproductions/cfal_crc.py --config=configs/cfal_crc.py:cpu --config.data.root=...
    python reproductions/cfal_crc.py --config=configs/cfal_crc.py:smoke

Variants:
    paper  NCT-CRC-HE-100K (15 % validation) tested on CRC-VAL-HE-7K at 224 px,
           ImageNet VGG19 when its weights can be had, batch 32, early stopping
           patience 5; the standard and the long-tailed (Fig. 7) training sets.
           Without --config.data.root the run falls back to the embedded
           synthetic tiles at the `synthetic` section's CPU scale (loud banner).
    cpu    real Kather data at CPU scale (64 px, small CNN, subsampled).
    smoke  seconds, for tests.
    sweep  Keras Tuner random search over Table III.
    cct    the transformer study of Table XIV (CCT backbone instead of VGG19).

Paper (Table V): CFAL macro-F1 0.95, accuracy 96.3 %; cross-entropy 0.92, 94.3 %.
Measured: see report.md of a run and docs/papers.md (never typed by hand).
"""

import ml_collections

# SphereFace's multiplicative margin: Table IX lists m = 0.35, but cos(0.35 * theta)
# LOOSENS the target (cos(m theta) >= cos(theta) for m < 1): a feature orthogonal to
# every class weight then has loss ~0 whatever its class (measured on IDC: loss 0.0
# from epoch 1, accuracy = the minority share). We read 0.35 as the excess over 1 of
# the SphereFace in 4uiiurz1/keras-arcface (default m = 1.35), the repository the
# authors' ArcFace/CosFace files are copied from; see docs/papers.md and
# tests/losses/margin_test.py::test_sphereface_margin_below_one_collapses.
SPHEREFACE_MARGIN_OFFSET = 1.0

# Table IX ("KCRC" column) unless marked otherwise.
LOSS = {
    "ce": {},
    "cfal": {"beta": 0.9999, "margin": 0.1, "sigma": 130.0, "gamma": 1.0},  # Table IX
    "cb_sphereface": {
        "beta": 0.9999,
        "scale": 20.0,
        "margin": SPHEREFACE_MARGIN_OFFSET + 0.35,
    },  # Table IX
    "cb_arcface": {"beta": 0.9999, "scale": 15.0, "margin": 0.1},  # Table IX
    "cb_cosface": {"beta": 0.9999, "scale": 20.0, "margin": 0.35},  # Table IX
    # Focal gamma: not in Table IX; Lin et al.'s default 2.0. Beta as for CFAL.
    "cb_focal": {"beta": 0.9999, "gamma": 2.0},
    # Ablation (Sec. V-D1): the Table IX values reused.
    "affinity": {"margin": 0.1, "sigma": 130.0},
    "cb_affinity": {"beta": 0.9999, "margin": 0.1, "sigma": 130.0},
}

_MARGIN_SPACE = {
    "beta": [0.9, 0.99, 0.999, 0.9999, 0.99999],  # Table III
    "scale": [1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 64.0],  # Table III
    "margin": [0.1, 0.35, 0.5, 0.7, 0.9],  # Table III
}
SPACE = {
    "cfal": {  # Table III
        "beta": [0.9, 0.99, 0.999, 0.9999, 0.99999],
        "margin": [round(0.1 * i, 1) for i in range(1, 10)],
        "sigma": [80.0 + 50.0 * i for i in range(8)],
        "gamma": [0.5, 1.0, 2.0, 5.0],
    },
    "cb_arcface": _MARGIN_SPACE,
    "cb_cosface": _MARGIN_SPACE,
    # Table III margins, shifted by SPHEREFACE_MARGIN_OFFSET (see above).
    "cb_sphereface": {
        **_MARGIN_SPACE,
        "margin": [SPHEREFACE_MARGIN_OFFSET + m for m in _MARGIN_SPACE["margin"]],
    },
}

CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")  # Table II

PAPER = {
    "citation": "Mahbub et al., IEEE JBHI 28(2):952-963, 2024, doi:10.1109/JBHI.2023.3336372",
    "results_table": "Table V",
    # (precision, recall, macro-F1, accuracy %), Table V.
    "results": {
        "ce": (0.93, 0.92, 0.92, 94.3),
        "cb_sphereface": (0.94, 0.93, 0.93, 94.0),
        "cfal": (0.95, 0.95, 0.95, 96.3),
        "cb_arcface": (0.95, 0.94, 0.95, 95.8),
        "cb_cosface": (0.95, 0.94, 0.95, 95.9),
        "cb_focal": (0.95, 0.94, 0.95, 95.9),
        "ensemble_average": (0.96, 0.96, 0.96, 96.8),
        "ensemble_maximum": (0.95, 0.95, 0.95, 96.2),
        "ensemble_vote": (0.97, 0.96, 0.96, 97.0),
    },
    "long_tailed_table": "Table XIII",
    # (precision, recall, macro-F1), Table XIII (accuracy not reported).
    "long_tailed": {
        "ce": (0.91, 0.90, 0.90),
        "cfal": (0.94, 0.94, 0.94),
        "cb_arcface": (0.92, 0.91, 0.91),
        "cb_cosface": (0.94, 0.92, 0.93),
        "cb_focal": (0.92, 0.90, 0.91),
    },
    "ablation_table": "Table XII",
    # (macro-F1, accuracy %), Table XII.
    "ablation": {"affinity": (0.94, 95.4), "cb_affinity": (0.95, 96.0), "cfal": (0.95, 96.3)},
    "auroc_table": "Table VI",
    # Class-wise AUROC in the order of CLASSES, Table VI.
    "auroc": {
        "ce": (0.997, 1.000, 0.979, 0.941, 0.983, 0.936, 0.976, 0.800, 0.981),
        "cfal": (0.984, 1.000, 0.977, 0.993, 0.993, 0.966, 0.965, 0.885, 0.984),
        "ensemble_vote": (0.993, 1.000, 0.996, 0.996, 0.995, 0.987, 0.977, 0.863, 0.983),
    },
    "epoch_time_table": "Table X",
    # Seconds per epoch, mean (sd), VGG19 on CRC, Table X.
    "epoch_time": {
        "ce": (214, 0.4),
        "cfal": (248, 1.6),
        "cb_arcface": (217, 3.3),
        "cb_cosface": (215, 0.3),
        "cb_focal": (224, 0.5),
    },
    # Table XIV: CCT backbone, (precision, recall, macro-F1, accuracy %).
    "cct_table": "Table XIV",
    "cct": {
        "ce": (0.91, 0.90, 0.90, 92.0),
        "cfal": (0.94, 0.95, 0.95, 95.5),
        "cb_arcface": (0.94, 0.94, 0.94, 95.0),
        "cb_cosface": (0.94, 0.93, 0.93, 94.6),
        "cb_focal": (0.93, 0.94, 0.93, 94.5),
    },
}

VARIANTS = ("paper", "cpu", "smoke", "sweep", "cct")


def get_config(arg=None):
    variant = arg or "paper"
    if variant not in VARIANTS:
        raise ValueError(f"cfal_crc variant must be one of {VARIANTS}; received {arg!r}.")
    config = ml_collections.ConfigDict()
    config.title = "CFAL reproduction: Kather CRC, VGG19 (Mahbub et al. 2024, Table V)"
    config.variant = variant
    config.name = "cfal_crc"  # Docs markers <!-- cfal_crc:result -->.
    config.script = "reproductions/cfal_crc.py"
    config.protocol = "tfcell.papers.cfal:CRC"  # Settings, methods, tables.
    config.dataset = "crc"
    config.seed = 0
    # The GPU path (docs/scaling.md), not the paper's: Keras mixed_float16 for the
    # whole run (--config.mixed_precision=True); heads and losses stay float32.
    config.mixed_precision = False
    config.num_repeats = (
        3  # Paired t-tests (Sec. V-A) need repeats; the paper does not say how many.
    )
    # Every trained network: <setting>/<method>/model.keras, later repeats in r<k>/
    # (-1 = all repeats; n saves the first n, e.g. to spare disk with VGG19).
    config.save_model_repeats = -1

    config.data = ml_collections.ConfigDict()
    config.data.root = ""  # Holds NCT-CRC-HE-100K/ and CRC-VAL-HE-7K/; "" = synthetic.
    config.data.download = False
    config.data.image_size = 224  # Sec. IV-A: 224 x 224 patches.
    config.data.splits = ("standard", "long_tailed")  # Tables V and XIII.
    config.data.val_fraction = 0.15  # Sec. IV-A: 15 % of the training data.
    config.data.long_tail_total = (
        58_000  # Sec. V-D2 / Fig. 7: 58,000 images (None: largest feasible).
    )
    config.data.max_images = 0
    config.data.in_memory = False  # 100K x 224 px does not fit; stream from disk.

    # What a run on the embedded synthetic tiles uses instead of the paper scale
    # (a VGG19 on 224 px does not fit "a few minutes on 2 cores").
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.num_images = 900
    config.synthetic.image_size = 32
    config.synthetic.backbone = "small_cnn"
    config.synthetic.epochs = 6
    config.synthetic.num_repeats = 2

    config.model = ml_collections.ConfigDict()
    config.model.backbone = "vgg19"  # Sec. IV-A, Kather et al. [13].
    config.model.weights = "imagenet"  # Sec. IV-A: "VGG19 ... trained using ImageNet weights".
    config.model.embedding_dim = 64  # Not given in the paper.
    config.model.widths = (16, 32, 64)  # small_cnn only.

    config.methods = (
        "ce",
        "cb_sphereface",
        "cfal",
        "cb_arcface",
        "cb_cosface",
        "cb_focal",
    )  # Table V
    config.ablation = ("affinity", "cb_affinity")  # Table XII
    config.loss = ml_collections.ConfigDict(LOSS)

    config.ensemble = ml_collections.ConfigDict()
    config.ensemble.members = ("cfal", "cb_arcface", "cb_cosface", "cb_focal")  # Sec. V-A
    config.ensemble.rules = ("average", "maximum", "vote")  # Sec. III-C

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # Not given in the paper.
    config.optimizer.learning_rate = 1e-4  # Not given; a fine-tuning rate for ImageNet VGG19.

    config.training = ml_collections.ConfigDict()
    config.training.batch_size = 32  # Sec. IV-B
    config.training.epochs = 50  # Not given; early stopping decides (Sec. IV-B).
    config.training.patience = 5  # Sec. IV-B
    # Model selection, the same for every loss: the epoch with the best validation
    # macro-F1 (the paper's main metric), patience epochs without improvement stop
    # training. The paper says "early stopping ... when the validation loss
    # plateaus"; the CFAL loss value does not track accuracy (its focal weight
    # rises as the model improves), and the authors' code keeps the best
    # val_accuracy. See tfcell/experiments/selection.py.
    config.training.selection = "val_macro_f1"
    config.training.steps_per_epoch = 0
    config.training.augment = False
    config.training.verbose = 1
    # XLA for the training step: False | True | "auto" (Keras: XLA where it compiles).
    config.training.jit_compile = ml_collections.FieldReference(False, field_type=object)
    # The tf.data training augmentation as layers at the network's input, run on
    # the accelerator in training only (tfcell.data.TrainingAugmentation).
    config.training.augment_in_model = False
    config.training.tensorboard = True

    config.sweep = ml_collections.ConfigDict()
    config.sweep.enabled = False
    config.sweep.methods = ("cfal", "cb_arcface", "cb_cosface", "cb_sphereface")
    config.sweep.space = ml_collections.ConfigDict(SPACE)  # Table III
    config.sweep.max_trials = 20
    config.sweep.tuner = "random"

    config.paper = ml_collections.ConfigDict(PAPER)

    if variant == "cct":  # Table XIV: CCT, 2 conv + 2 transformer layers, projection 128.
        config.title = "CFAL reproduction: Kather CRC, CCT (Mahbub et al. 2024, Table XIV)"
        config.model.backbone = "cct"
        config.model.weights = ""
        config.synthetic.backbone = "cct"
        config.data.image_size = 32  # Not given; the Keras CCT example's size.
        config.data.splits = ("standard",)
        config.optimizer.learning_rate = 1e-3
        config.ablation = ()
        config.paper.results_table = "Table XIV"
        config.paper.results = PAPER["cct"]
    if variant in ("cpu", "sweep"):
        config.model.backbone = "small_cnn"
        config.model.weights = ""
        config.data.image_size = 64
        config.data.max_images = 6000
        config.data.in_memory = True
        config.optimizer.learning_rate = 1e-3
        config.training.epochs = 10
        config.training.batch_size = 64
        config.training.verbose = 2
        config.training.tensorboard = False
    if variant == "sweep":
        config.sweep.enabled = True
        config.num_repeats = 1
        config.data.splits = ("standard",)
        config.sweep.max_trials = 8
    if variant == "smoke":
        config.data.root = "synthetic"
        config.synthetic.num_images = 180
        config.synthetic.image_size = 16
        config.synthetic.epochs = 1
        config.synthetic.num_repeats = 1  # The IDC smoke run covers repeats and t-tests.
        config.model.embedding_dim = 8
        config.model.widths = (8,)
        config.data.splits = ("standard",)
        config.methods = ("ce", "cfal", "cb_cosface")
        config.ablation = ()
        config.ensemble.members = ("cfal", "cb_cosface")
        config.training.batch_size = 32
        config.training.verbose = 0
        config.training.tensorboard = False
        config.sweep.max_trials = 1
    return config
