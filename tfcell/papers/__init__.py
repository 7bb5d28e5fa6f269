"""The papers tfcell reproduces, one package each: its protocol (settings), the
methods it compares and its report tables. Numbers live in `configs/`, commands
in `reproductions/`; the harness that runs them is `tfcell.experiments`.

    cfal           Mahbub et al. 2024, centre-focused affinity loss (IDC, Kather CRC)
    boda           Umer et al. 2023 / Yang et al. 2022, BoDA for white-cell domain
                   generalisation (ERM, DANN, CORAL, MMD, BoDA, Ours+)
    heterogeneity  Goswami et al. 2020, heterogeneity loss (C-NMC; IDC patients)
    ece            Panteli et al. 2021, exclusive cross-entropy for sparse-shot nuclei
    aecfe          Salehi et al. 2022, AE-CFE: a cell segmenter in place of Mask R-CNN,
                   a domain-aligned autoencoder and random forests across domains
"""
