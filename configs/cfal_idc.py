"""CFAL on invasive ductal carcinoma (IDC) patches with the AlexNet variant.

Mahbub et al., "Center-Focused Affinity Loss for Class Imbalance Histology Image
Classification", IEEE JBHI 28(2), 2024: Tables III, IV, IX, X, XI, Fig. 4.

    python reproductions/cfal_idc.py                                # paper
    python reproductions/cfal_idc.py --config=configs/cfal_idc.py:cpu
    python reproductions/cfal_idc.py --config=configs/cfal_idc.py:smoke
    python reproductions/cfal_idc.py --config=configs/cfal_idc.py:sweep

Variants:
    paper  the paper's protocol (full IDC set at --config.data.root, 32 px,
           batch 32, early stopping patience 5); both the paper's 70/30 split by
           patch and a 70/30 split by patient.
    cpu    the 7,187 patches of ../shared/data/idc (199 patients), both splits,
           every loss, the ablation and the ensembles, 3 repeats, sized for 15-30
           minutes on 2 CPU cores (16 min measured on the harness).
    smoke  seconds, for tests (synthetic IDC-like data).
    sweep  Keras Tuner random search over Table III (on the cpu data).

Paper (Table IV): CFAL F1 0.83, accuracy 86.0 %; cross-entropy F1 0.76, 84.7 %.
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

# Table IX ("IDC" column) unless marked otherwise.
LOSS = {
    "ce": {},
    "cfal": {"beta": 0.999, "margin": 0.1, "sigma": 130.0, "gamma": 2.0},  # Table IX
    "cb_sphereface": {
        "beta": 0.999,
        "scale": 30.0,
        "margin": SPHEREFACE_MARGIN_OFFSET + 0.35,
    },  # Table IX
    "cb_arcface": {"beta": 0.999, "scale": 30.0, "margin": 0.5},  # Table IX
    "cb_cosface": {"beta": 0.999, "scale": 10.0, "margin": 0.5},  # Table IX
    # Focal gamma: not in Table IX; Lin et al.'s default 2.0. Beta as for CFAL.
    "cb_focal": {"beta": 0.999, "gamma": 2.0},
    # Ablation (Sec. V-D1): "the best-determined hyperparameters (Table IX) were reutilized".
    "affinity": {"margin": 0.1, "sigma": 130.0},
    "cb_affinity": {"beta": 0.999, "margin": 0.1, "sigma": 130.0},
}

# Table III: the search space of the sweep.
SPACE = {
    "cfal": {
        "beta": [0.9, 0.99, 0.999, 0.9999, 0.99999],
        "margin": [round(0.1 * i, 1) for i in range(1, 10)],
        "sigma": [80.0 + 50.0 * i for i in range(8)],
        "gamma": [0.5, 1.0, 2.0, 5.0],
    },
    **{
        name: {
            "beta": [0.9, 0.99, 0.999, 0.9999, 0.99999],
            "scale": [1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 64.0],
            "margin": [offset + m for m in (0.1, 0.35, 0.5, 0.7, 0.9)],
        }
        # Table III margins; SphereFace's shifted by SPHEREFACE_MARGIN_OFFSET (see above).
        for name, offset in (
            ("cb_arcface", 0.0),
            ("cb_cosface", 0.0),
            ("cb_sphereface", SPHEREFACE_MARGIN_OFFSET),
        )
    },
}

PAPER = {
    "citation": "Mahbub et al., IEEE JBHI 28(2):952-963, 2024, doi:10.1109/JBHI.2023.3336372",
    "results_table": "Table IV",
    # (precision, recall, macro-F1, accuracy %), Table IV.
    "results": {
        "ce": (0.80, 0.74, 0.76, 84.7),
        "cb_sphereface": (0.80, 0.79, 0.80, 83.7),
        "cfal": (0.83, 0.83, 0.83, 86.0),
        "cb_arcface": (0.83, 0.81, 0.82, 85.7),
        "cb_cosface": (0.83, 0.82, 0.82, 85.7),
        "cb_focal": (0.81, 0.84, 0.82, 84.9),
        "ensemble_average": (0.83, 0.83, 0.83, 86.2),
        "ensemble_maximum": (0.83, 0.82, 0.82, 86.0),
        "ensemble_vote": (0.83, 0.83, 0.83, 86.3),
    },
    "ablation_table": "Table XI",
    # (macro-F1, accuracy %), Table XI.
    "ablation": {"affinity": (0.80, 84.0), "cb_affinity": (0.81, 84.5), "cfal": (0.83, 86.0)},
    "auroc_table": "not reported for IDC",
    "auroc": {},
    "long_tailed_table": "-",
    "long_tailed": {},
    "epoch_time_table": "Table X",
    # Seconds per epoch, mean (sd), AlexNet on IDC, Table X.
    "epoch_time": {
        "ce": (53, 1.1),
        "cfal": (87, 5.3),
        "cb_arcface": (56, 5.3),
        "cb_cosface": (57, 0.6),
        "cb_focal": (83, 1.2),
    },
}


VARIANTS = ("paper", "cpu", "smoke", "sweep")


def get_config(arg=None):
    variant = arg or "paper"
    if variant not in VARIANTS:
        raise ValueError(f"cfal_idc variant must be one of {VARIANTS}; received {arg!r}.")
    config = ml_collections.ConfigDict()
    config.title = "CFAL reproduction: IDC, AlexNet (Mahbub et al. 2024, Table IV)"
    config.variant = variant
    config.name = "cfal_idc"  # Docs markers <!-- cfal_idc:result -->.
    config.script = "reproductions/cfal_idc.py"
    config.protocol = "tfcell.papers.cfal:IDC"  # Settings, methods, tables.
    config.dataset = "idc"
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
    config.data.root = ""  # IDC_regular_ps50_idx5 layout; "" = ../shared/data/idc, else synthetic.
    config.data.download = False
    config.data.image_size = 32  # Sec. IV-B: "resized to 32 x 32 pixels", as in [22].
    config.data.splits = ("patch", "patient")  # Sec. IV-A 70/30 by patch; + patient-level.
    config.data.test_fraction = 0.3  # Sec. IV-A: 70 % train, 30 % test.
    # Not given for IDC; early stopping needs a validation set: 15 % as for CRC (Sec. IV-A).
    config.data.val_fraction = 0.15
    config.data.max_images = 0  # 0 = all.
    config.data.in_memory = True

    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.num_images = 2000  # Used only when no real data is found.

    config.model = ml_collections.ConfigDict()
    config.model.backbone = "alexnet"  # Sec. IV-A, Janowczyk & Madabhushi [22].
    config.model.embedding_dim = 64  # Not given in the paper.
    config.model.widths = (32, 32, 64)  # Janowczyk & Madabhushi's AlexNet variant.
    config.model.weights = ""

    config.methods = (
        "ce",
        "cb_sphereface",
        "cfal",
        "cb_arcface",
        "cb_cosface",
        "cb_focal",
    )  # Table IV
    config.ablation = ("affinity", "cb_affinity")  # Table XI (CFAL shared with the comparison).
    config.loss = ml_collections.ConfigDict(LOSS)

    config.ensemble = ml_collections.ConfigDict()
    # Sec. V-A: SphereFace excluded; CFAL, ArcFace, CosFace and focal combined.
    config.ensemble.members = ("cfal", "cb_arcface", "cb_cosface", "cb_focal")
    config.ensemble.rules = ("average", "maximum", "vote")  # Sec. III-C

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # Not given in the paper.
    config.optimizer.learning_rate = 1e-3  # Not given in the paper.

    config.training = ml_collections.ConfigDict()
    config.training.batch_size = 32  # Sec. IV-B: "32-image batches".
    config.training.epochs = 100  # Not given; early stopping decides (Sec. IV-B).
    config.training.patience = 5  # Sec. IV-B: early stopping, patience 5, validation loss.
    # Model selection, the same for every loss: the epoch with the best validation
    # macro-F1 (the paper's main metric), patience epochs without improvement stop
    # training. The paper says "early stopping ... when the validation loss
    # plateaus"; the CFAL loss value does not track accuracy (its focal weight
    # rises as the model improves), and the authors' code keeps the best
    # val_accuracy. See tfcell/experiments/selection.py.
    config.training.selection = "val_macro_f1"
    config.training.steps_per_epoch = 0  # 0 = the whole training split.
    config.training.augment = False  # The paper mentions no augmentation.
    config.training.verbose = 1  # Progress bars.
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
    config.sweep.tuner = "random"  # or "bayesian"

    config.paper = ml_collections.ConfigDict(PAPER)

    if variant in ("cpu", "sweep"):
        # 15-30 min on 2 cores: 2 splits x 3 repeats x 8 losses = 48 networks,
        # so 20-35 s each: a half-width AlexNet and at most 8 epochs.
        config.model.widths = (16, 16, 32)
        config.training.epochs = 8
        config.training.batch_size = 64
        config.training.verbose = 2  # One line per epoch.
        config.training.tensorboard = False
    if variant == "sweep":
        config.sweep.enabled = True
        config.num_repeats = 1
        config.data.splits = ("patient",)
        config.training.epochs = 8
        config.sweep.max_trials = 8
    if variant == "smoke":
        config.data.root = "synthetic"
        config.data.splits = ("patient",)
        config.methods = ("ce", "cfal", "cb_cosface")
        config.ablation = ()
        config.ensemble.members = ("cfal", "cb_cosface")
        config.synthetic.num_images = 160
        config.data.image_size = 16
        config.num_repeats = 2
        config.model.embedding_dim = 8
        config.model.widths = (8, 8, 8)
        config.training.epochs = 1
        config.training.batch_size = 32
        config.training.verbose = 0
        config.training.tensorboard = False
        config.sweep.max_trials = 1
    return config
