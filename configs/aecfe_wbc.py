"""AE-CFE: unsupervised cross-domain features of single white cells, classified by
a random forest trained on one domain and tested on every domain.

Salehi, Sadafi, Gruber, Lienemann, Navab, Albarqouni and Marr, "Unsupervised
Cross-Domain Feature Extraction for Single Blood Cell Image Classification",
MICCAI 2022; R. Salehi's thesis (Politecnico di Torino, 2023), Sec. 2.10 and
3.1-3.4, Tables 3.1-3.3, Fig. 3.14; the losses as marrlab/AE-CFE @45785e2 runs
them (../shared/REFERENCE_FORMULAS.md, AE-CFE).

    python reproductions/aecfe_wbc.py                                  # cpu (default)
    python reproductions/aecfe_wbc.py --config=configs/aecfe_wbc.py:paper --config.data.root=/data/wbc
    python reproductions/aecfe_wbc.py --config.data.extra_test_domains='("lab=/data/my_lab",)'
    python reproductions/aecfe_wbc.py --config=configs/aecfe_wbc.py:smoke

Variants:
    paper  Matek-19, INT-20 and Acevedo-20 from --config.data.root in their
           published layouts, the 13 harmonised classes, 14 x 14 ROI feature maps
           and the authors' convolutional autoencoder (128 px reconstructions),
           150 epochs, batch 1500, 5 runs, the thesis's bottleneck sizes.
    cpu    ../shared/data: PBC (pbc_128), BCCD and JTSC, the 5 classes they share,
           64 px on a 25 um field, pooled ROI features and the dense autoencoder
           (16 px reconstructions), 2 runs; about 30-45 minutes on 2 CPU cores.
    smoke  seconds, for tests (synthetic white cells from three hospitals,
           threshold masks for the detector).

Every number below is cited to the thesis (Sec. / Table), to the authors' code
via REFERENCE_FORMULAS, or says it is a CPU-scale choice.
"""

import ml_collections

PAPER = {
    "citation": (
        "Salehi, Sadafi, Gruber, Lienemann, Navab, Albarqouni and Marr, Unsupervised "
        "Cross-Domain Feature Extraction for Single Blood Cell Image Classification, MICCAI "
        "2022; R. Salehi, MSc thesis, Politecnico di Torino 2023, Tables 3.1-3.3"
    ),
    # The thesis's dataset names of the run's domains (pbc_128 IS Acevedo-20, the
    # PBC set of Acevedo et al. 2020, here with 5 of its classes).
    "domain_names": {
        "matek": "Matek-19",
        "int20": "INT-20",
        "acevedo": "Acevedo-20",
        "pbc": "Acevedo-20",
    },  # fmt: skip
    # Table 3.2, accuracy in %, mean and std over 5 runs (None: no std printed; the
    # thesis's 0 for ResNet-RF / R-CNN-RF across domains: "random forest was not able
    # to classify any sample correctly"). Columns in this order:
    "table_3_2_methods": ("resnet_rf", "rcnn_rf", "ae_rf", "nd_ae_da", "aae_da", "ae_cfe"),
    "table_3_2": (
        (
            "Matek-19",
            "Matek-19",
            ((62.5, 2.8), (60.5, 0.8), (86.0, 0.04), (83.0, 0.4), (87.5, 0.8), (83.7, 0.5)),
        ),
        (
            "Matek-19",
            "INT-20",
            ((0.0, None), (0.0, None), (46.8, 0.2), (40.0, 0.21), (31.4, 0.31), (48.4, 0.2)),
        ),
        (
            "Matek-19",
            "Acevedo-20",
            ((0.0, None), (0.0, None), (20.1, 0.1), (8.4, 0.8), (8.6, 0.4), (21.9, 0.4)),
        ),
        (
            "INT-20",
            "Matek-19",
            ((0.0, None), (0.0, None), (47.2, 3.4), (30.0, 0.1), (63.9, 0.2), (73.2, 0.1)),
        ),
        (
            "INT-20",
            "INT-20",
            ((45.2, 1.1), (46.09, 0.4), (69.1, 0.4), (66.3, 0.3), (66.8, 0.4), (65.6, 0.5)),
        ),
        (
            "INT-20",
            "Acevedo-20",
            ((0.0, None), (0.0, None), (4.6, 0.6), (15.7, 0.9), (17.7, 0.7), (31.8, 0.4)),
        ),
        (
            "Acevedo-20",
            "Matek-19",
            ((0.0, None), (0.0, None), (39.4, 1.4), (15.2, 0.4), (39.4, 0.6), (45.1, 0.5)),
        ),
        (
            "Acevedo-20",
            "INT-20",
            ((0.0, None), (0.0, None), (9.7, 0.3), (16.0, 0.6), (17.7, 0.7), (21.0, 0.5)),
        ),
        (
            "Acevedo-20",
            "Acevedo-20",
            ((37.1, 0.8), (35.9, 1.1), (67.2, 0.7), (40.0, 0.2), (64.3, 0.1), (65.2, 0.5)),
        ),
    ),  # fmt: skip
    # Table 3.3, accuracy in %: ResNext trained on each set, Matek et al.'s published
    # model (trained on Matek-19; the thesis's first row label "Matek-29" is a typo),
    # and AE-CFE. None: not reported.
    "table_3_3_methods": ("ResNext", "Matek et al.", "AE-CFE"),
    "table_3_3": (
        ("Matek-19", "Matek-19", ((None, None), (96.1, None), (83.7, 0.5))),
        ("Matek-19", "INT-20", ((None, None), (29.5, None), (48.4, 0.2))),
        ("Matek-19", "Acevedo-20", ((None, None), (8.1, None), (21.9, 0.4))),
        ("INT-20", "Matek-19", ((49.6, 6.3), (None, None), (73.2, 0.1))),
        ("INT-20", "INT-20", ((88.7, 1.5), (None, None), (65.6, 0.5))),
        ("INT-20", "Acevedo-20", ((16.9, 1.6), (None, None), (31.8, 0.4))),
        ("Acevedo-20", "Matek-19", ((7.3, 3.1), (None, None), (45.1, 0.5))),
        ("Acevedo-20", "INT-20", ((8.1, 1.4), (None, None), (21.0, 0.5))),
        ("Acevedo-20", "Acevedo-20", ((85.7, 2.4), (None, None), (65.2, 0.5))),
    ),
    # Table 3.1: random-forest accuracy (fraction) on Matek-19 (80/20) by bottleneck
    # size; the AE-SSIM-BB columns (bounding-box crops, SSIM image loss: the
    # configuration AE-RF uses here) with a ResNet101 and a ResNet50 Mask R-CNN.
    "table_3_1_columns": ("AE-SSIM-BB, ResNet101", "AE-SSIM-BB, ResNet50"),
    "table_3_1": (
        (5, (0.78, 0.72)),
        (10, (0.79, 0.78)),
        (50, (0.85, 0.84)),
        (100, (0.87, 0.85)),
        (150, (0.87, 0.85)),
        (300, (0.87, 0.85)),
        (400, (0.87, 0.86)),
        (650, (0.87, 0.85)),
        (1000, (0.86, 0.86)),
    ),
    # Sec. 3.2.2: "85% of the cells in datasets are detected successfully" (65,693 of
    # 77,363 images), Mask R-CNN mAP 0.89.
    "detected_fraction": 0.85,
    "detector_map": 0.89,
}

# The label spaces (class order = the forests' and the oracle's output order), as
# tfcell.data.wbc defines them (tests/papers/aecfe_test.py checks they agree).
FIVE_CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
HARMONISED_CLASSES = (
    "basophil", "eosinophil", "erythroblast", "myeloblast", "promyelocyte", "myelocyte",
    "metamyelocyte", "neutrophil_banded", "neutrophil_segmented", "monocyte",
    "lymphocyte_typical", "lymphocyte_atypical", "smudge_cell",
)  # fmt: skip

# Per autoencoder method: the domain term's weight and kind (tfcell.training.AECFETrainer).
LOSS = {
    # AE-RF: "an autoencoder ... with no domain adaptation technique" (Sec. 3.4).
    "ae_rf": {"beta": 0.0, "alignment": "domain"},
    # ND-AE-DA: Eq. 2.8, the same mean + symmetric-KL term against N(0, I) (Sec.
    # 3.4.1); weighted as AE-CFE's (beta 5, the authors' train.py).
    "nd_ae_da": {"beta": 5.0, "alignment": "normal"},
    # AAE-DA: Eq. 2.9 weights the autoencoder and discriminator losses equally
    # (beta L_ae + beta L_disc), i.e. 1 relative to the reconstruction.
    "aae_da": {"beta": 1.0, "alignment": "adversarial"},
    # AE-CFE: Eq. 2.20, beta = 5 (the authors' train.py; REFERENCE_FORMULAS).
    "ae_cfe": {"beta": 5.0, "alignment": "domain"},
}

VARIANTS = ("paper", "cpu", "smoke")


def _input_contract(config):
    """What every saved network expects (written to config.json with the run)."""
    contract = ml_collections.ConfigDict()
    contract.image_size = config.data.image_size  # Square RGB crops of this side,
    contract.value_range = (0.0, 255.0)  # float32 RGB (the segmenter's input),
    contract.field_um = config.data.field_um  # on this field of view where the scale is known.
    contract.class_names = FIVE_CLASSES if config.data.label_space == "five" else HARMONISED_CLASSES
    contract.encoder_layer = config.detector.encoder_layer  # h_i: ROI-align of this map,
    contract.output_size = config.detector.output_size  # on this grid,
    contract.pooling = config.detector.pooling  # "avg" (vectors) or "" (14 x 14 maps);
    contract.features = "minmax per cell to [-1, 1]"  # tfcell.models.minmax_features;
    contract.latent_dim = config.model.latent_dim  # then the encoder's codes.
    contract.reconstruction_size = config.model.reconstruction_size
    config.input_contract = contract


def get_config(arg=None):
    variant = arg or "cpu"
    if variant not in VARIANTS:
        raise ValueError(f"aecfe_wbc variant must be one of {VARIANTS}; received {arg!r}.")
    config = ml_collections.ConfigDict()
    config.title = "AE-CFE reproduction: cross-domain white-cell features (Salehi et al. 2022)"
    config.variant = variant
    config.name = (
        "aecfe_wbc"  # Docs markers <!-- aecfe_wbc:measured -->, <!-- aecfe_wbc:result -->.
    )
    config.script = "reproductions/aecfe_wbc.py"
    config.protocol = "tfcell.papers.aecfe:WBC"
    config.seed = 0
    # The GPU path (docs/scaling.md), not the paper's: Keras mixed_float16 for the
    # whole run (--config.mixed_precision=True); heads and losses stay float32.
    config.mixed_precision = False
    config.num_repeats = 5  # Sec. 3.4: "mean and standard deviation ... over 5 runs".
    config.save_model_repeats = -1  # Every oracle CNN: jobs/<setting>/r<k>/oracle_cnn/model.keras.

    config.data = ml_collections.ConfigDict()
    # "" = ../shared/data (PBC from pbc_128, BCCD, JTSC: 5 shared classes);
    # "synthetic"; or the folder holding Matek-19, Acevedo-20 and INT-20 (paper).
    config.data.root = ""
    config.data.download = False
    config.data.label_space = "harmonised"  # Sec. 3.1: 13 classes defined with an expert.
    config.data.domains = ("matek", "int20", "acevedo")  # Sec. 3.1, Table 3.2's order.
    config.data.matek = "AML-Cytomorphology_LMU"  # Published layouts under data.root.
    config.data.acevedo = "PBC_dataset_normal_DIB"
    config.data.int20 = "INT-20"
    # Further folder-per-class sets, "name=path" or "path": further target domains
    # (their training 80 % feeds the autoencoders without labels, their 20 % is
    # tested by every forest and oracle; never a forest's training domain).
    config.data.extra_test_domains = ()
    # Sec. 3.4: "splitted on 80% and 20% as train set and test set" per dataset.
    config.data.test_fraction = 0.2
    config.data.image_size = 128  # The authors' image decoder output (128 px crops).
    # One field of view (tfcell.data.physical_scale), INT-20's 25 um (Sec. 3.1: 288 px
    # = 25 um), the smallest of the three; unknown pixel sizes estimated from the
    # lymphocyte nuclei of scale_reference (the BoDA package's rule).
    config.data.field_um = 25.0
    config.data.scale_reference = "acevedo"
    config.data.scale_cell_class = "lymphocyte_typical"
    config.data.max_per_domain = 0  # 0 = every image.

    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.num_images = 240
    config.synthetic.imbalance = 4.0

    config.detector = ml_collections.ConfigDict()
    # The documented substitute for Mask R-CNN (tfcell/papers/aecfe/detector.py): a
    # U-Net segmenter trained on the JTSC nucleus/cytoplasm masks.
    config.detector.masks = "jtsc"  # "jtsc" | "threshold" (synthetic smoke masks)
    config.detector.mask_domain = ""  # threshold masks: images of this domain.
    config.detector.width = 16  # x 2**depth = 256 bottleneck channels (Sec. 2.10: 256 x 14 x 14).
    config.detector.depth = 4
    config.detector.epochs = 26  # Sec. 3.2.2: Mask R-CNN trained for 26 epochs,
    config.detector.learning_rate = 1e-3  # with Adam at 0.001,
    config.detector.augment = "thesis"  # and the Sec. 2.4.2 augmentations on half the images.
    config.detector.batch_size = 8  # Not given in the thesis.
    config.detector.test_fraction = 0.2  # Held-out masked crops for the Dice.
    config.detector.encoder_layer = "bottleneck_relu2"
    config.detector.output_size = 14  # Mask R-CNN's 14 x 14 ROI-align (Sec. 2.10).
    config.detector.pooling = ""  # "" = the 14 x 14 maps (the thesis); "avg" = vectors.
    config.detector.threshold = 0.5
    config.detector.max_distance = 0.25  # The central cell's component within 1/4 side.
    # Sec. 3.2.2: undetected cells are left out (65,693 of 77,363 images); counted.
    config.detector.on_miss = "drop"  # "drop" | "whole_crop"

    config.model = ml_collections.ConfigDict()
    config.model.latent_dim = 50  # Sec. 3.3: bottleneck 50.
    config.model.reconstruction_size = 128  # The authors' image decoder: 14 -> 128 px.
    config.model.resnet_weights = ""  # ResNet-RF: path of the no-top ImageNet .h5.
    config.model.resnet_image_size = 224  # ImageNet's size (Sec. 2.4: 224 x 224).

    config.autoencoder = ml_collections.ConfigDict()
    # Sec. 3.4.3: "Matek-19 is defined as the source, and the other datasets ... targets".
    config.autoencoder.source_domain = "matek"
    config.autoencoder.epochs = 150  # Sec. 3.4: 150 epochs.
    config.autoencoder.batch_size = 1500  # Sec. 3.4.3: total batch 1500 (500 per GPU).
    config.autoencoder.discriminator_width = 64  # AAE-DA: 3 layers (Sec. 3.4.2), width not given.

    config.methods = ("resnet_rf", "rcnn_rf", "ae_rf", "nd_ae_da", "aae_da", "ae_cfe", "oracle_cnn")
    config.loss = ml_collections.ConfigDict(LOSS)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3  # Sec. 3.4: Adam, learning rate 0.001.

    config.forest = ml_collections.ConfigDict()
    config.forest.max_depth = 16  # The authors' RandomForestClassifier(max_depth=16).
    config.forest.n_estimators = 100  # scikit-learn's default (the authors' code sets none).
    config.forest.n_jobs = 1

    config.oracle = ml_collections.ConfigDict()
    # Table 3.3's ResNext oracles: here a small CNN (CPU) trained on each domain.
    config.oracle.widths = (32, 64, 128, 256)
    config.oracle.epochs = 30
    config.oracle.batch_size = 64
    config.oracle.learning_rate = 1e-3  # Sec. 3.4: every model with Adam at 0.001.

    config.bottleneck = ml_collections.ConfigDict()
    # Table 3.1's sizes; each is AE-RF with that latent size (50 = ae_rf itself).
    config.bottleneck.sizes = (5, 10, 50, 100, 150, 300, 400, 650, 1000)

    config.training = ml_collections.ConfigDict()
    config.training.verbose = 2

    config.report = ml_collections.ConfigDict()
    config.report.figures = True
    config.report.embedding = "umap"  # Fig. 3.14: UMAP (umap-learn, optional); else t-SNE.
    config.report.embedding_points = 1500  # Cells per panel (a seeded draw).
    config.report.examples_per_domain = 4  # Reconstructed cells per domain (PNG).

    config.sweep = ml_collections.ConfigDict()
    config.sweep.enabled = False

    config.paper = ml_collections.ConfigDict(PAPER)

    if variant in ("cpu", "smoke"):
        # ../shared/data's three real domains with their 5 shared classes, on the BoDA
        # package's scale: 25 um field, PBC's 0.25 um/px as the yardstick for the
        # estimated BCCD and JTSC pixel sizes, 64 px (a U-Net of depth 4 sees the cell
        # at 4 x 4 on its bottleneck).
        config.data.label_space = "five"
        config.data.domains = ("pbc", "bccd", "jtsc")
        config.data.image_size = 64
        config.data.scale_reference = "pbc"
        config.data.scale_cell_class = "lymphocyte"
        # PBC has 10,298 cells of the 5 classes; 1,500 keep it the majority (source)
        # domain, as Matek-19 is in the thesis, at a CPU size. BCCD 351, JTSC 299: all.
        config.data.max_per_domain = 1500
        config.autoencoder.source_domain = "pbc"  # The largest domain (Matek-19's role).
        # Pooled 256-d ROI vectors and the dense autoencoder (tfcell.models.aecfe_autoencoder
        # with feature_shape=(256,)): the 14 x 14 maps and 128 px image decoder cost
        # about 30x more per cell on a CPU.
        config.detector.pooling = "avg"
        config.model.reconstruction_size = 16  # The smallest 4 * 2**k >= SSIM's 11 px window.
        # Timing probe (tfcell.papers.aecfe, busy 2-core machine): an autoencoder epoch
        # over 1,720 cells 2.4 s, a detector epoch 5 s, an oracle epoch (1,200 PBC
        # images) 2.7 s; 3 runs x (4 + 2 bottleneck autoencoders x 40 epochs, 3 oracles
        # x 8 epochs) + the detector: about 38 minutes.
        config.autoencoder.epochs = 40  # Sec. 3.4: 150; CPU scale.
        config.autoencoder.batch_size = 256  # Sec. 3.4.3: 1500; 256 of the 1,720 cells.
        config.oracle.widths = (16, 32, 64, 128)
        config.oracle.epochs = 8
        config.num_repeats = 3  # Sec. 3.4: 5 runs; CPU scale.
        config.bottleneck.sizes = (10, 100)  # With 50 (AE-RF itself): three of Table 3.1's.
        config.report.embedding = "tsne"
    if variant == "smoke":
        config.data.root = "synthetic"
        config.data.domains = ("hospital_0", "hospital_1", "hospital_2")
        config.data.image_size = 32
        config.data.max_per_domain = 0
        config.data.scale_reference = ""
        config.detector.masks = "threshold"
        config.detector.mask_domain = "hospital_2"  # JTSC's role: the set with masks.
        config.detector.width = 4
        config.detector.depth = 2
        config.detector.epochs = 2
        config.detector.augment = "dihedral"
        config.autoencoder.source_domain = "hospital_0"
        config.autoencoder.epochs = 2
        config.autoencoder.batch_size = 64
        config.model.latent_dim = 8
        config.oracle.widths = (8, 8)
        config.oracle.epochs = 1
        config.forest.n_estimators = 10
        config.num_repeats = 1
        config.bottleneck.sizes = ()  # Table 3.1 is tested on fabricated records.
        config.training.verbose = 0
        config.report.embedding_points = 90
        config.report.examples_per_domain = 2
    _input_contract(config)
    return config
